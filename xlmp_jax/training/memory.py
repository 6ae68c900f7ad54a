"""Per-device memory plan of a training run, computed from shapes alone (nothing is allocated or compiled).

``plan(run, num_devices)`` returns the terms in bytes; ``plan_report`` formats them (the train CLI
prints it for ``--plan``). Terms, per device, for the config's mesh ``(data, fsdp, tensor)``:

* params: every parameter (``param_shapes``) in ``model.param_dtype``, divided by the mesh axes its
  logical axes map to under the run's ``mesh.logical_rules`` (an axis that does not divide the dimension is
  dropped, as ``sharding.fit_spec`` does);
* optimizer: AdamW's two moments, each the size and sharding of the params;
* gradients: the size and sharding of the params;
* compute-dtype weights: when ``model.dtype`` differs from ``param_dtype`` or FSDP gathers weights, a copy
  of the (tensor-sharded) weights in the compute dtype (an upper bound: XLA may gather layer by layer);
* activations saved for the backward pass of one micro-batch (``batch_size / grad_accum_steps`` rows
  split over ``data x fsdp``), S = T + Lp encoder positions, per layer and token (compute dtype):
  11 D + 2 F values (layer input, q/k/v, context, attention output, LayerNorm outputs, FFN in/out) plus
  two 1-byte hidden-dropout masks; with attention dropout in training the explicit attention also keeps
  H x S probabilities (fp32) plus the dropped copy and its mask; the fused kernel keeps none of those.
  With ``remat='full'`` each layer keeps only its input, and one layer's activations are live while it
  is recomputed. The LM head adds logits at P positions (K gathered, sparse head): compute dtype + an
  fp32 copy + their gradient;
* the total, and the total with the other remat setting for comparison.

Rough by design (XLA's buffer assignment reuses and fuses); checked against measured peaks in
BENCHMARKS.md, where the error is reported.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from data_pipelines.batch_format import max_predictions
from xlmp_jax.model.model_config import ModelConfig
from xlmp_jax.model.xlmp import init_params
from xlmp_jax.run_config import RunConfig
from xlmp_jax.training.sharding import Rules, default_rules, mesh_sizes

GIB = 2**30


def _shard_factor(shape: tuple[int, ...], names: tuple[str | None, ...], mesh: dict[str, int], rules: Rules) -> int:
    """How many ways ``rules`` split a parameter of ``shape`` with logical axis ``names``."""
    spec = nn.logical_to_mesh_axes(names, rules)
    factor = 1
    for size, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec)), strict=False):
        if axes is None:
            continue
        names_ = (axes,) if isinstance(axes, str) else tuple(axes)
        split = math.prod(mesh[a] for a in names_)
        if size % split == 0:
            factor *= split
    return factor


def param_table(model_cfg: ModelConfig, mesh: dict[str, int], rules: Rules | None = None) -> tuple[int, int, int]:
    """(total params, params per device, params per device with only tensor sharding applied), under the
    logical-axis ``rules`` (left out, the default)."""
    rules = default_rules() if rules is None else rules
    boxed = jax.eval_shape(lambda: init_params(model_cfg, jax.random.key(0)))["params"]
    leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    total = per_device = tensor_only = 0
    tensor_mesh = {"data": 1, "fsdp": 1, "tensor": mesh["tensor"]}
    for leaf in leaves:
        if isinstance(leaf, nn.Partitioned):
            shape, names = tuple(leaf.value.shape), tuple(leaf.names)
        else:
            shape, names = tuple(leaf.shape), (None,) * len(leaf.shape)
        n = int(np.prod(shape))
        total += n
        per_device += n // _shard_factor(shape, names, mesh, rules)
        tensor_only += n // _shard_factor(shape, names, tensor_mesh, rules)
    return total, per_device, tensor_only


def activation_bytes(
    model_cfg: ModelConfig, rows: int, seq_length: int, head_positions: int, remat: str, training: bool = True
) -> int:
    """Activation bytes kept for the backward pass of ``rows`` rows (see the module docstring)."""
    cb = jnp.dtype(model_cfg.dtype).itemsize
    d, f, h, n_layers = model_cfg.hidden_size, model_cfg.intermediate_size, model_cfg.num_heads, model_cfg.num_layers
    lp = model_cfg.pool.length if model_cfg.pool is not None else 0
    s = seq_length + lp
    tokens = rows * s
    per_layer = tokens * ((11 * d + 2 * f) * cb + (2 * d if training and model_cfg.hidden_dropout > 0 else 0))
    explicit = training and model_cfg.attention_dropout > 0 and model_cfg.attention != "fused"
    explicit = explicit or model_cfg.attention == "explicit"
    if explicit:
        per_layer += rows * h * s * s * (4 + cb + (1 if training and model_cfg.attention_dropout > 0 else 0))
    layer_input = tokens * d * cb
    if remat == "full":
        layers = n_layers * layer_input + per_layer
    else:  # "none" (and, as an upper bound, the partial policies)
        layers = n_layers * per_layer
    embeddings = rows * seq_length * d * (4 + cb)  # gathered sum (fp32) + LayerNorm output
    head = rows * head_positions * (model_cfg.padded_vocab_size * (cb + 4 + 4) + 3 * d * cb)
    return int(layers + embeddings + head)


def plan(run: RunConfig, num_devices: int) -> dict[str, Any]:
    """The memory plan's numbers (bytes per device) for a run on ``num_devices`` devices."""
    model_cfg = run.model
    mesh = mesh_sizes(run.mesh, num_devices)
    batch, accum = run.train.batch_size, run.train.grad_accum_steps
    dp = mesh["data"] * mesh["fsdp"]
    if batch % (accum * dp):
        raise ValueError(
            f"train.batch_size={batch} does not split into grad_accum_steps={accum} x data-parallel size {dp}"
        )
    rows = batch // accum // dp
    seq = run.data.seq_length
    k = max_predictions(seq, run.data.mlm_rate)
    total, per_device, tensor_only = param_table(model_cfg, mesh, run.mesh.logical_rules)
    pb = jnp.dtype(model_cfg.param_dtype).itemsize
    cb = jnp.dtype(model_cfg.dtype).itemsize
    gathered = tensor_only * cb if (mesh["fsdp"] > 1 or model_cfg.dtype != model_cfg.param_dtype) else 0
    act = {r: activation_bytes(model_cfg, rows, seq, k, r) for r in ("none", "full")}
    fixed = {
        "params": per_device * pb,
        "optimizer": 2 * per_device * pb,
        "gradients": per_device * pb,
        "compute_weights": gathered,
    }
    remat = model_cfg.remat if model_cfg.remat in act else "none"
    return {
        "num_devices": num_devices,
        "mesh": mesh,
        "rows_per_device": rows,
        "seq_length": seq,
        "head_positions": k,
        "params_total": total,
        "params_per_device": per_device,
        **fixed,
        "activations": act[remat],
        "activations_no_remat": act["none"],
        "activations_remat_full": act["full"],
        "remat": model_cfg.remat,
        "total": sum(fixed.values()) + act[remat],
        "total_no_remat": sum(fixed.values()) + act["none"],
        "total_remat_full": sum(fixed.values()) + act["full"],
    }


def plan_report(run: RunConfig, num_devices: int) -> str:
    """A human-readable per-device memory plan (printed by ``python -m xlmp_jax.train --plan``)."""
    p = plan(run, num_devices)
    m = p["mesh"]

    def gib(x: int) -> str:
        return f"{x / GIB:8.3f} GiB"

    lines = [
        f"memory plan per device: {num_devices} devices, mesh data={m['data']} fsdp={m['fsdp']} tensor={m['tensor']}; "
        f"{p['rows_per_device']} rows x {p['seq_length']} tokens per device and micro-batch, "
        f"LM head at {p['head_positions']} positions/row",
        f"  params       {gib(p['params'])}  ({p['params_per_device']:,} of {p['params_total']:,} parameters)",
        f"  optimizer    {gib(p['optimizer'])}  (AdamW: 2 moments)",
        f"  gradients    {gib(p['gradients'])}",
        f"  compute-dtype weights {gib(p['compute_weights'])}",
        f"  activations  {gib(p['activations_no_remat'])}  without remat",
        f"  activations  {gib(p['activations_remat_full'])}  with remat='full'",
        f"  total        {gib(p['total_no_remat'])}  without remat",
        f"  total        {gib(p['total_remat_full'])}  with remat='full'",
        f"  this config (remat={p['remat']!r}): {gib(p['total'])}",
    ]
    return "\n".join(lines)
