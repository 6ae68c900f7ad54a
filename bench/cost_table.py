"""Per-device FLOPs and communication of the compiled train step, per mesh layout, next to formulas.

  python -m bench.cost_table                                  # base and large, six layouts, 8 CPU devices
  python -m bench.cost_table --configs=base --layers=2 --json=  # a quick look (2-layer base, no file)

For each run config (``configs/<name>.py``) and mesh layout ``(data, fsdp, tensor)`` on 8 simulated CPU
devices, the project's own train step (``steps.make_train_step`` on the shardings of
``state.abstract_train_state``) is lowered on abstract, sharded inputs and compiled; nothing is allocated.
Measured, per device and step:

* ``xla_flops``: ``compiled.cost_analysis()['flops']`` of the partitioned program (matmuls and
  element-wise work), and ``dot_flops``: the matmuls alone, read from the HLO (``xlmp_jax.runtime.hlo_cost``);
* ``comm_bytes``: what one device sends in the program's collectives (ring convention, ``xlmp_jax.runtime.hlo_cost``).

Formulas (n = 8 devices, layout d x f x t, B rows of T tokens, S = T + Lp encoder positions, K head
positions, N layers, D hidden, P_t = params per device with only the tensor axis applied, P_dev = params
per device (``memory.param_table``), 4-byte fp32 params/gradients, c = compute-dtype bytes):

* FLOPs = ``flops.flops_per_token`` x B x T / n (6 x params x tokens, attention, pool and the K-position
  head), plus the forward recomputed under ``model.remat``: the attention's two batched matmuls
  (4 N S^2 D per row) for ``dots_no_batch``, the whole forward for ``full``;
* data-parallel gradient all-reduce  2 (d - 1) / d x 4 P_dev;
* FSDP weight all-gathers in forward and backward  2 x 4 (P_t - P_dev)  (= 2 (f-1)/f x the FSDP-split
  weights), and the gradient reduce-scatter  4 (P_t - P_dev);
* tensor-parallel activation all-reduces, 2 forward + 2 backward per layer:  4 N x 2 (t-1)/t x B/(d f) x S x D x c.

Just over 300 lines because the formulas above and the code that evaluates them stand in one file, to be
read side by side; the HLO reading lives in ``xlmp_jax.runtime.hlo_cost``.
"""

from __future__ import annotations

import os

if __name__ == "__main__":  # before JAX starts: 8 simulated CPU devices
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from xlmp_jax.runtime import hlo_cost  # noqa: E402

LAYOUTS = ((8, 1, 1), (1, 8, 1), (1, 1, 8), (2, 2, 2), (2, 4, 1), (1, 2, 4))
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "cost_table.json")


def run_config(name: str, layout: tuple[int, int, int], batch_size: int, seq_length: int, layers: int = 0) -> Any:
    """``configs/<name>.py`` with the layout's mesh, ``batch_size`` rows of ``seq_length`` tokens, no
    gradient accumulation, and (``layers`` > 0) that many encoder layers, resolved (a ``RunConfig``)."""
    from xlmp_jax import config_utils

    config = importlib.import_module(f"configs.{name}").get_config()
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = layout
    config.mesh.dcn_data = 1
    config.train.batch_size = batch_size
    config.train.grad_accum_steps = 1
    config.data.seq_length = seq_length
    if layers:
        config.model.num_layers = layers
    return config_utils.resolve(config)


def abstract_inputs(run: Any, tx: Any, mesh: jax.sharding.Mesh) -> tuple[Any, Any, dict]:
    """(state shardings, abstract sharded state, abstract sharded batch) for the train step.

    ``state.abstract_train_state`` traces the init without running it, so the bench builds state exactly
    as training does without allocating 0.3-0.6 B parameters and their Adam moments.
    """
    from bench.harness import synthetic_batch
    from xlmp_jax.training import sharding
    from xlmp_jax.training import state as train_state

    state, shardings = train_state.abstract_train_state(run.model, tx, mesh, run.mesh.logical_rules)
    rows = run.train.batch_size
    example = synthetic_batch(1, run.data.seq_length, run.model.vocab_size)  # names and dtypes
    placed = sharding.batch_sharding(mesh)
    batch = {k: jax.ShapeDtypeStruct((rows, *v.shape[1:]), v.dtype, sharding=placed) for k, v in example.items()}
    return shardings, state, batch


# LLVM code generation only: XLA's HLO passes (SPMD partitioning, fusion) and so the FLOPs and the
# collectives are unchanged, but the CPU compile takes a fraction of the time (the tests use it too).
FAST_BACKEND = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def compile_step(run: Any, compiler_options: dict[str, Any] | None = None) -> Any:
    """The compiled train step of ``run`` on all devices (the trainer's mesh, state and step builders)."""
    from bench.harness import LANGUAGES
    from xlmp_jax.training import optim, sharding, steps

    mesh = sharding.make_mesh(run.mesh)
    optimizer = optim.make_optimizer(run.train)
    shardings, state, batch = abstract_inputs(run, optimizer.tx, mesh)
    step = steps.make_train_step(
        run,
        optimizer,
        mesh,
        shardings,
        num_languages=len(run.data.languages) or LANGUAGES,
        compiler_options=compiler_options,
    )
    return step.lower(state, batch).compile()


def flops_formula(run: Any, num_devices: int) -> float:
    """Model FLOPs per device and step: ``flops.step_flops_per_device`` (the formula with remat's recompute)."""
    from xlmp_jax.training import flops

    return flops.step_flops_per_device(run, num_devices)


def comm_formula(run: Any, num_devices: int) -> dict[str, float]:
    """Bytes one device sends per step by the module docstring's formulas, by term, plus ``total``."""
    from xlmp_jax.training import memory

    model = run.model
    d, f, t = run.mesh.data, run.mesh.fsdp, run.mesh.tensor
    if d * f * t != num_devices:
        raise ValueError(f"layout data={d} fsdp={f} tensor={t} is not {num_devices} devices")
    _, per_device, tensor_only = memory.param_table(model, {"data": d, "fsdp": f, "tensor": t}, run.mesh.logical_rules)
    pb = jnp.dtype(model.param_dtype).itemsize
    cb = jnp.dtype(model.dtype).itemsize
    rows = run.train.batch_size // (d * f)
    s = run.data.seq_length + (model.pool.length if model.pool is not None else 0)
    fsdp_split = (tensor_only - per_device) * pb  # (f - 1) / f of the FSDP-split weights, in bytes
    terms = {
        "dp_grad_all_reduce": 2.0 * (d - 1) / d * per_device * pb,
        "fsdp_weight_all_gather": 2.0 * fsdp_split,
        "fsdp_grad_reduce_scatter": float(fsdp_split),
        "tp_activation_all_reduce": 4.0 * model.num_layers * 2.0 * (t - 1) / t * rows * s * model.hidden_size * cb,
    }
    terms["total"] = sum(terms.values())
    return terms


def _layer_free(name: str) -> str:
    return re.sub(r"layer_\d+", "layer_*", name)


def op_excess(base_hlo: str, other_hlo: str, top: int = 6) -> list[dict[str, Any]]:
    """The ops (``op_name``, layers merged) with the largest FLOPs increase from ``base_hlo`` to ``other_hlo``."""
    tables = []
    for text in (base_hlo, other_hlo):
        merged: dict[str, float] = {}
        for name, value in hlo_cost.flops_by_op(text).items():
            merged[_layer_free(name)] = merged.get(_layer_free(name), 0.0) + value
        tables.append(merged)
    a, b = tables
    rows = [(b.get(k, 0.0) - a.get(k, 0.0), k) for k in set(a) | set(b)]
    return [{"op": k, "extra_flops": dv, "base_flops": a.get(k, 0.0)} for dv, k in sorted(rows, reverse=True)[:top]]


def measure(name: str, layout: tuple[int, int, int], args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """One row of the table (and the program's HLO text, for op comparisons)."""
    config = run_config(name, layout, args.batch, args.seq, args.layers)
    n = jax.device_count()
    began = time.perf_counter()
    compiled = compile_step(config, FAST_BACKEND if args.fast_backend else None)
    compile_s = time.perf_counter() - began
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, list) else analysis
    text = compiled.as_text()
    measured_comm = hlo_cost.collective_bytes(text, n)
    formula_comm = comm_formula(config, n)
    formula_flops = flops_formula(config, n)
    xla_flops = float(analysis["flops"])
    dots = sum(hlo_cost.dot_flops(text).values())
    row = {
        "config": name,
        "layout": dict(zip(("data", "fsdp", "tensor"), layout, strict=True)),
        "rows_per_device": args.batch // (layout[0] * layout[1]),
        "compile_s": round(compile_s, 1),
        "xla_flops": xla_flops,
        "dot_flops": dots,
        "formula_flops": formula_flops,
        "xla_over_formula": xla_flops / formula_flops,
        "dots_over_formula": dots / formula_flops,
        "comm_bytes": measured_comm,
        "comm_formula": formula_comm,
        "comm_over_formula": measured_comm["total"] / formula_comm["total"] if formula_comm["total"] else None,
    }
    return row, text


def _gb(x: float) -> str:
    return f"{x / 1e9:.3f}"


def markdown(rows: list[dict[str, Any]]) -> str:
    """Two tables (FLOPs, bytes) per config."""
    out = []
    for name in dict.fromkeys(r["config"] for r in rows):
        mine = [r for r in rows if r["config"] == name]
        out += [
            f"\n**{name}**: FLOPs per device and step (TFLOP)\n",
            "| layout d,f,t | XLA cost analysis | matmuls (HLO) | formula | XLA / formula | matmuls / formula |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for r in mine:
            lay = ",".join(str(v) for v in r["layout"].values())
            out.append(
                f"| {lay} | {r['xla_flops'] / 1e12:.3f} | {r['dot_flops'] / 1e12:.3f} | "
                f"{r['formula_flops'] / 1e12:.3f} | {r['xla_over_formula']:.3f} | {r['dots_over_formula']:.3f} |"
            )
        out += [
            f"\n**{name}**: bytes sent per device and step (GB, ring convention)\n",
            "| layout d,f,t | all-reduce | all-gather | reduce-scatter | all-to-all | permute | measured | "
            "formula: DP AR + FSDP AG + FSDP RS + TP AR | formula | measured / formula |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in mine:
            lay = ",".join(str(v) for v in r["layout"].values())
            m, f = r["comm_bytes"], r["comm_formula"]
            terms = " + ".join(
                _gb(f[k])
                for k in (
                    "dp_grad_all_reduce",
                    "fsdp_weight_all_gather",
                    "fsdp_grad_reduce_scatter",
                    "tp_activation_all_reduce",
                )
            )
            ratio = f"{r['comm_over_formula']:.2f}" if r["comm_over_formula"] is not None else "-"
            out.append(
                f"| {lay} | {_gb(m['all-reduce'])} | {_gb(m['all-gather'])} | {_gb(m['reduce-scatter'])} | "
                f"{_gb(m['all-to-all'])} | {_gb(m['collective-permute'])} | {_gb(m['total'])} | {terms} | "
                f"{_gb(f['total'])} | {ratio} |"
            )
    return "\n".join(out)


def parse_layouts(text: str) -> list[tuple[int, int, int]]:
    layouts = []
    for item in text.split(";"):
        parts = item.strip().split(",")
        if len(parts) != 3 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
            raise ValueError(f"--layouts: {item!r} is not 'data,fsdp,tensor' (three positive integers)")
        layouts.append(tuple(int(p) for p in parts))
    return layouts  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="base,large", help="run configs (configs/<name>.py), comma-separated")
    p.add_argument("--layouts", default=";".join(",".join(map(str, x)) for x in LAYOUTS), help="d,f,t;d,f,t;...")
    p.add_argument("--batch", type=int, default=256, help="global batch (rows), split over data x fsdp")
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--layers", type=int, default=0, help="override the encoder depth (0 = the config's)")
    p.add_argument(
        "--fast_backend", type=int, default=1, help="1: LLVM -O0 (same HLO, faster compile; see FAST_BACKEND)"
    )
    p.add_argument(
        "--activation_constraints",
        type=int,
        default=1,
        help="0: trace the model without its activation constraints (sharding.ACTIVATION_CONSTRAINTS), to compare",
    )
    p.add_argument("--json", default=RESULTS, help="where to write the results ('' = nowhere)")
    args = p.parse_args(argv)
    layouts = parse_layouts(args.layouts)
    from xlmp_jax.training import sharding

    sharding.ACTIVATION_CONSTRAINTS = bool(args.activation_constraints)
    n = jax.device_count()
    for lay in layouts:
        if lay[0] * lay[1] * lay[2] != n:
            raise ValueError(f"--layouts: {lay} needs {lay[0] * lay[1] * lay[2]} devices, there are {n}")
        if args.batch % (lay[0] * lay[1]):
            raise ValueError(f"--batch={args.batch} does not split over data x fsdp = {lay[0] * lay[1]} ({lay})")
    rows, excess = [], {}
    for name in args.configs.split(","):
        texts = {}
        for lay in layouts:
            row, texts[lay] = measure(name, lay, args)
            rows.append(row)
            print(f"# {name} {lay}: compiled in {row['compile_s']} s", flush=True)
        if (8, 1, 1) in texts and (1, 8, 1) in texts:
            excess[name] = op_excess(texts[(8, 1, 1)], texts[(1, 8, 1)])
    from bench.harness import machine_info

    result = {
        "bench": "cost_table",
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "machine": machine_info(),
        "jax": jax.__version__,
        "devices": f"{n} x {jax.devices()[0].device_kind}",
        "batch": args.batch,
        "seq_length": args.seq,
        "layers_override": args.layers,
        "compiler_options": FAST_BACKEND if args.fast_backend else {},
        "activation_constraints": bool(args.activation_constraints),
        "rows": rows,
        "fsdp_vs_data_op_excess": excess,
    }
    print(markdown(rows))
    for name, ops in excess.items():
        print(f"\n{name}: ops with the most extra FLOPs under fsdp=8 vs data=8 (per device, GFLOP)")
        for o in ops:
            print(f"  {o['extra_flops'] / 1e9:+.3f}  (data=8: {o['base_flops'] / 1e9:.3f})  {o['op']}")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
