"""Device mesh, logical-axis rules and batch placement (see ARCHITECTURE.md, "Where sharding is decided").

The model names the axes of its parameters and activations (``vocab``, ``embed``, ``heads``, ...); the
run config's ``mesh.logical_rules`` (default ``run_config.LOGICAL_RULES``, checked by
``run_config.check_logical_rules``) maps those names onto the mesh axes ``('data', 'fsdp', 'tensor')``.
The default:

* ``batch`` over ``('data', 'fsdp')``: every data-parallel and FSDP shard sees its own rows;
* ``embed`` over ``fsdp``: parameters (and so the optimizer state) are split over the FSDP axis and
  gathered per layer by XLA (ZeRO-3 style); activations keep ``embed`` whole because ``fsdp`` is
  already taken by ``batch`` there (flax assigns each mesh axis once per array, in rule order);
* ``heads``, ``mlp``, ``vocab``, ``embed_out`` over ``tensor``: Megatron-style tensor parallelism.

Every function here that maps logical names takes the rules (``rules``: ``run.mesh.logical_rules``);
left out, they are the default (``default_rules``: for tests, benches and the fine-tuning evals).

The vocabulary is padded by the model (``model.vocab_multiple``) so that ``tensor`` divides it:
``check_vocab_split`` refuses a mesh that does not, before anything compiles. Any other dimension that a
mesh axis does not divide is kept whole instead: see ``fit_spec``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from xlmp_jax.model.model_config import ModelConfig
from xlmp_jax.run_config import LOGICAL_RULES, MESH_AXES, MeshConfig, TrainConfig

BATCH_AXES = ("data", "fsdp")
Rules = Sequence[tuple[str, Any]]


def default_rules() -> Rules:
    """The default logical-axis rules (``run_config.LOGICAL_RULES``, the mesh block's default)."""
    return LOGICAL_RULES


def _rules(rules: Rules | None) -> Rules:
    return default_rules() if rules is None else rules


def slice_shape(mesh_config: MeshConfig, num_devices: int) -> tuple[int, int, int]:
    """``(data, fsdp, tensor)`` of one slice of ``num_devices`` devices: the -1 axis (if any) takes the rest."""
    sizes = [mesh_config.data, mesh_config.fsdp, mesh_config.tensor]
    fixed = math.prod(s for s in sizes if s != -1)
    described = ", ".join(f"mesh.{a}={s}" for a, s in zip(MESH_AXES, sizes, strict=True))
    if -1 in sizes:
        if num_devices % fixed:
            raise ValueError(f"{described}: the fixed axes ({fixed}) do not divide the device count {num_devices}")
        sizes[sizes.index(-1)] = num_devices // fixed
    elif fixed != num_devices:
        raise ValueError(f"{described} needs {fixed} devices, but there are {num_devices} (set one axis to -1)")
    return tuple(sizes)  # type: ignore[return-value]


def mesh_sizes(mesh_config: MeshConfig, num_devices: int) -> dict[str, int]:
    """The whole mesh's ``{'data', 'fsdp', 'tensor'}`` sizes on ``num_devices`` (``dcn_data`` multiplies ``data``)."""
    dcn = mesh_config.dcn_data
    if num_devices % dcn:
        raise ValueError(f"mesh.dcn_data={dcn} does not divide the device count {num_devices}")
    sizes = dict(zip(MESH_AXES, slice_shape(mesh_config, num_devices // dcn), strict=True))
    sizes["data"] *= dcn
    return sizes


def make_mesh(mesh_config: MeshConfig, devices: Sequence[Any] | None = None) -> Mesh:
    """A ``Mesh`` with axes ``('data', 'fsdp', 'tensor')`` from ``config.mesh`` (see ``device_grid``)."""
    return Mesh(device_grid(mesh_config, jax.devices() if devices is None else devices), MESH_AXES)


def device_grid(mesh_config: MeshConfig, devices: Sequence[Any]) -> np.ndarray:
    """The devices arranged as ``(data, fsdp, tensor)``.

    ``mesh.data``/``fsdp``/``tensor`` describe one slice (the fast ICI network); ``mesh.dcn_data`` > 1
    multiplies the data axis across slices (the slow DCN network), so only the data-parallel gradient
    reduction crosses it. A slice is the devices sharing ``slice_index`` (TPU multi-slice); without that
    attribute each process is taken as a slice (GPU clusters).
    """
    devices = list(devices)
    dcn_data = mesh_config.dcn_data
    sizes = mesh_sizes(mesh_config, len(devices))
    ici = (sizes["data"] // dcn_data, sizes["fsdp"], sizes["tensor"])
    if dcn_data == 1:
        return mesh_utils.create_device_mesh(ici, devices, allow_split_physical_axes=True)
    attr = "slice_index" if hasattr(devices[0], "slice_index") else "process_index"
    granules = len({getattr(d, attr) for d in devices})
    if granules != dcn_data:
        raise ValueError(
            f"mesh.dcn_data={dcn_data}, but the {len(devices)} devices form {granules} slice(s) (by {attr})"
        )
    return mesh_utils.create_hybrid_device_mesh(
        ici, (dcn_data, 1, 1), devices, process_is_granule=attr == "process_index", allow_split_physical_axes=True
    )


def data_parallel_size(mesh: Mesh) -> int:
    """How many ways the batch is split (``data`` x ``fsdp``)."""
    return mesh.shape["data"] * mesh.shape["fsdp"]


def check_batch_size(global_batch_size: int, mesh: Mesh, grad_accum_steps: int = 1) -> None:
    """Raises a ValueError naming ``train.batch_size`` unless each micro-batch splits evenly over the mesh."""
    dp = data_parallel_size(mesh)
    micro = global_batch_size // grad_accum_steps
    if micro % dp:
        what = f"train.batch_size={global_batch_size}"
        if grad_accum_steps > 1:
            what += f" / train.grad_accum_steps={grad_accum_steps} = {micro}"
        raise ValueError(
            f"{what} is not divisible by the data-parallel size {dp} "
            f"(mesh.data={mesh.shape['data']} x mesh.fsdp={mesh.shape['fsdp']})"
        )
    if global_batch_size % jax.process_count():
        raise ValueError(
            f"train.batch_size={global_batch_size} is not divisible by the process count {jax.process_count()}"
        )


def check_fits(model: ModelConfig, train: TrainConfig, mesh: Mesh, rules: Rules | None = None) -> None:
    """Every check of a run against its mesh, once, before anything compiles: the padded vocabulary splits
    (under ``rules``), and the train (and eval) batches divide over the data-parallel size and the processes."""
    check_vocab_split(model.vocab_size, model.vocab_multiple, model.padded_vocab_size, mesh, rules)
    check_batch_size(train.batch_size, mesh, train.grad_accum_steps)
    dp = data_parallel_size(mesh)
    if train.eval_every and (train.eval_batch_size % dp or train.eval_batch_size % jax.process_count()):
        raise ValueError(
            f"train.eval_batch_size={train.eval_batch_size} is not divisible by the data-parallel size {dp} "
            f"(or the process count {jax.process_count()})"
        )


def check_vocab_split(
    vocab_size: int, vocab_multiple: int, padded_vocab_size: int, mesh: Mesh, rules: Rules | None = None
) -> None:
    """Raises a ValueError naming the sizes unless the ``vocab`` axis's mesh axes divide the padded vocabulary.

    The embedding table, the decoder bias and the [B, K, V] logits are split over the vocabulary; a
    size the mesh does not divide would leave them whole on every device.
    """
    axes = dict(_rules(rules)).get("vocab")
    names = () if axes is None else ((axes,) if isinstance(axes, str) else tuple(axes))
    ways = math.prod(mesh.shape[a] for a in names)
    if padded_vocab_size % ways:
        split = " x ".join(f"mesh.{a}={mesh.shape[a]}" for a in names)
        raise ValueError(
            f"the padded vocabulary {padded_vocab_size} (model.vocab_size={vocab_size} rounded up to "
            f"model.vocab_multiple={vocab_multiple}) is not divisible by {split}: set model.vocab_multiple "
            f"to a multiple of {ways}"
        )


def fit_spec(spec: PartitionSpec, shape: Sequence[int], mesh: Mesh) -> PartitionSpec:
    """Drops the mesh axes of ``spec`` that do not divide the matching dimension of ``shape``.

    XLA needs even shards; a dimension a mesh axis does not divide is kept whole (replicated). (The
    vocabulary is padded by the model instead, and checked by ``check_vocab_split``.)
    """
    out = []
    for i, size in enumerate(shape):
        axes = spec[i] if i < len(spec) else None
        if axes is not None:
            names = (axes,) if isinstance(axes, str) else tuple(axes)
            if size % math.prod(mesh.shape[a] for a in names):
                axes = None
        out.append(axes)
    while out and out[-1] is None:
        out.pop()
    return PartitionSpec(*out)


def logical_shardings(boxed_tree: Any, mesh: Mesh, rules: Rules | None = None) -> Any:
    """NamedShardings for a tree of (abstract) arrays boxed with logical axis names (``nn.Partitioned``).

    Unboxed leaves are replicated. The result has the structure of ``nn.unbox(boxed_tree)``; a part without
    arrays (optax's ``MaskedNode``, where a parameter group's optimizer holds nothing) is kept as it is.
    """
    logical = nn.get_partition_spec(boxed_tree)
    shapes = nn.unbox(boxed_tree)
    specs = nn.logical_to_mesh(logical, _rules(rules))
    return jax.tree.map(
        lambda spec, x: NamedSharding(mesh, fit_spec(spec, x.shape, mesh)) if hasattr(x, "shape") else x,
        specs,
        shapes,
        is_leaf=lambda x: isinstance(x, PartitionSpec),
    )


# The model's activation constraints (nn.with_logical_constraint) act only under a global mesh; they pin
# the activations' layout instead of leaving it to XLA's sharding propagation. False only to compare.
ACTIVATION_CONSTRAINTS = True


def activation_rules(mesh: Mesh, rules: Rules | None = None) -> contextlib.ExitStack:
    """Context for tracing the model inside jit: its logical constraints resolve onto ``mesh``."""
    stack = contextlib.ExitStack()
    if ACTIVATION_CONSTRAINTS:
        stack.enter_context(jax.sharding.use_abstract_mesh(mesh.abstract_mesh))
        stack.enter_context(nn.logical_axis_rules(_rules(rules)))
    return stack


def logits_sharding(mesh: Mesh, rules: Rules | None = None) -> NamedSharding:
    """Logits [B, K, Vp] for the loss: rows split like the batch, the (padded) vocabulary over ``vocab``'s
    mesh axis (by default tensor), so no device ever holds a whole [B, K, Vp] block.

    ``losses.mlm_loss`` reduces over the split vocabulary with maxes and sums only. (Wrong gradients once
    seen with the vocabulary split here came from the head's unpinned decoder input, since constrained to
    (batch, length, embed) in ``layers.MLMHead``, not from the split loss.)
    """
    return nn.logical_to_mesh_sharding(PartitionSpec("batch", "length", "vocab"), mesh, _rules(rules))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Every batch array is split along its first (row) dimension over ``data`` x ``fsdp``."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def shard_batch(batch: Mapping[str, Any], mesh: Mesh) -> dict[str, jax.Array]:
    """This host's NumPy batch (``global_batch // process_count`` rows) -> global ``jax.Array``s.

    Multi-host safe: each process passes only its own rows; ``jax.make_array_from_process_local_data``
    stitches the global array without any cross-host copy.
    """
    sharding = batch_sharding(mesh)
    out = {}
    for name, value in batch.items():
        value = np.asarray(value)
        global_shape = (value.shape[0] * jax.process_count(), *value.shape[1:])
        out[name] = jax.make_array_from_process_local_data(sharding, value, global_shape)
    return out
