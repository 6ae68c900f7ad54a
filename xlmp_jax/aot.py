"""Compile a run's exact train and eval steps for a Cloud TPU slice on this machine, before booking it.

    python -m xlmp_jax.aot --config=configs/large.py --topology=v5litepod-256
    python -m xlmp_jax.aot --config=configs/base.py --topology=v4-32 --num_slices=2 --config.model.remat=full

The devices come from libtpu's description of the slice (``xlmp_jax.runtime.tpu_topology``; one per chip, as many
as ``launch.accelerators`` counts), so no TPU, data or vocabulary file is needed: the train state and a
batch are shapes only (``state.abstract_train_state``), the mesh is the run's (``sharding.make_mesh``), and
the steps are the trainer's (``steps.make_train_step``, ``make_eval_step``), lowered and compiled by the TPU
compiler. The mesh and remat are the ones ``launch.layouts`` gives the launcher for that slice, unless
``--config.mesh.*`` / ``--config.model.remat`` say otherwise. Printed, per device:

* memory from the compiler (arguments, outputs, temporaries, total = arguments + outputs + temporaries -
  aliased, the donated state counted once) against the chip's HBM and against ``train --plan``
  (``xlmp_jax.training.memory``);
* FLOPs from the compiler's cost analysis against ``flops.step_flops_per_device``. XLA counts a loop body
  once, so with ``model.scan_layers`` the other layers' FLOPs are added from the formula
  (``flops.layer_flops_per_device``) and the bytes accessed (the HBM term) are XLA's scaled by the same
  factor: an estimate (large on v5e 16x16: FLOPs -2.9 %, bytes -14 % against the 24-layer loop's);
* bytes sent per collective kind, read from the HLO (``xlmp_jax.runtime.hlo_cost``; loop bodies times their trip
  count);
* a roofline bound on the step time: the largest of FLOPs / peak, bytes accessed / HBM bandwidth and
  collective bytes / ICI bandwidth (``tpu_topology.CHIPS``, datasheet figures), each printed and named, and
  the tokens/s it implies. In a multi-slice run, the collectives whose replica groups span slices are
  timed against the data-center network instead (``tpu_topology.Chip.dcn_bandwidth``, ``--dcn_gbps``): a
  fourth term, ``dcn``. The cost analysis' ``optimal_seconds`` is not used (it came back negative on v5e);
* the compile time.

Exit status: 0 and a line starting ``fits:``; 3 and a line starting ``does not fit:`` with the compiler's
overshoot when the layout does not fit in HBM; 1 for anything else (a bad flag, config or topology).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from launch import layouts
from launch.command_line import LaunchError, split_overrides
from xlmp_jax import config_utils
from xlmp_jax.runtime import hlo_cost, tpu_topology
from xlmp_jax.training import flops, optim, sharding, steps
from xlmp_jax.training import memory as memory_plan
from xlmp_jax.training import state as train_state

FITS, DOES_NOT_FIT, FAILED = 0, 3, 1
GIB = 2**30
LANGUAGES = 128  # length of the per-language metric arrays when the config names no languages


class DoesNotFit(Exception):
    """The compiler refused the program: it needs more HBM than a chip has. The message is its overshoot."""


def batch_spec(rows: int, seq_length: int) -> dict[str, tuple[tuple[int, ...], Any]]:
    """The shapes and dtypes of a batch in the data pipeline's format (``data_pipelines.batch_format``)."""
    tokens = (rows, seq_length)
    return {
        "input_ids": (tokens, jnp.int32),
        "attention_mask": (tokens, jnp.int32),
        "positions": (tokens, jnp.int32),
        "targets": (tokens, jnp.int32),
        "weights": (tokens, jnp.float32),
        "language": ((rows,), jnp.int32),
    }


def abstract_batch(rows: int, seq_length: int, mesh: jax.sharding.Mesh) -> dict[str, jax.ShapeDtypeStruct]:
    """A batch of ``rows`` x ``seq_length`` as sharded shapes (rows over data x fsdp, as the trainer places it)."""
    placed = sharding.batch_sharding(mesh)
    return {k: jax.ShapeDtypeStruct(s, d, sharding=placed) for k, (s, d) in batch_spec(rows, seq_length).items()}


def _compile(lowered: Any) -> Any:
    try:
        return lowered.compile()
    except Exception as e:  # the TPU compiler's out-of-memory verdict is a JaxRuntimeError / XlaRuntimeError
        text = str(e)
        if "RESOURCE_EXHAUSTED" in text or "CompileTimeHbmOom" in text:
            raise DoesNotFit(overshoot(text)) from None
        raise


def overshoot(message: str) -> str:
    """The compiler's own words on how far over HBM a program is (its first lines that name the sizes)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    wanted = [line for line in lines if re.search(r"(?i)exceed|hbm|memory|used|limit|\bG\b|GiB|bytes", line)]
    return " / ".join((wanted or lines)[:3])[:600]


def memory(compiled: Any) -> dict[str, int]:
    """Per-device bytes from the compiler's memory analysis (``total`` counts donated, aliased buffers once)."""
    m = compiled.memory_analysis()
    out = {
        "arguments": int(m.argument_size_in_bytes),
        "outputs": int(m.output_size_in_bytes),
        "temporaries": int(m.temp_size_in_bytes),
        "aliased": int(m.alias_size_in_bytes),
        "code": int(m.generated_code_size_in_bytes),
    }
    out["total"] = out["arguments"] + out["outputs"] + out["temporaries"] - out["aliased"]
    return out


def costs(compiled: Any) -> dict[str, float]:
    """FLOPs and bytes accessed per device from the compiler's cost analysis."""
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, list) else analysis
    return {"flops": float(analysis.get("flops", 0.0)), "bytes_accessed": float(analysis.get("bytes accessed", 0.0))}


def roofline(flops: float, bytes_accessed: float, comm: dict[str, float], chip: tpu_topology.Chip) -> dict[str, Any]:
    """Lower bounds on the step time (s) from each resource, and the largest (the bound) with its name.
    ``comm`` is ``hlo_cost.collective_bytes``: its ``dcn`` part crosses slices, the rest stays on ICI."""
    terms = {
        "compute": flops / chip.peak_flops,
        "hbm": bytes_accessed / chip.hbm_bandwidth,
        "ici": (comm["total"] - comm.get("dcn", 0.0)) / chip.ici_send_bandwidth,
        "dcn": comm.get("dcn", 0.0) / chip.dcn_bandwidth,
    }
    limit = max(terms, key=terms.get)
    return {"terms_s": terms, "bound_s": terms[limit], "limited_by": limit}


def load_run(config: str, overrides: Sequence[str], accelerator_type: str, num_slices: int, layers: int = 0) -> Any:
    """The run as the launcher would start it on the slice: ``launch.layouts``' mesh and remat for it, then
    ``--config.*`` overrides (which win), and ``mesh.dcn_data`` = the slice count for multi-slice."""
    given = list(overrides)
    implied = layouts.layout_overrides(config, accelerator_type, given)
    if num_slices > 1 and not any(o.startswith("--config.mesh.dcn_data") for o in given):
        implied.append(f"--config.mesh.dcn_data={num_slices}")
    if layers:
        implied.append(f"--config.model.num_layers={layers}")
    return config_utils.load_run(config, implied + given)


def analyse(
    run: Any,
    accelerator_type: str,
    num_slices: int = 1,
    *,
    eval_step: bool = True,
    devices: Sequence[Any] = (),
    compiler_options: dict[str, Any] | None = None,
    hlo_path: str = "",
    dcn_gbps: float = 0.0,
) -> dict[str, Any]:
    """Compiles ``run``'s train (and eval) step for the slice; returns the report's numbers.

    Raises ``DoesNotFit`` when the compiler runs out of HBM. ``devices`` replaces the slice's (tests pass
    simulated CPU devices, and ``compiler_options`` to compile them fast; the chip figures stay the slice's).
    """
    chip, _ = tpu_topology.parse_type(accelerator_type)
    if dcn_gbps < 0:
        raise ValueError(f"--dcn_gbps={dcn_gbps:g} must be > 0 (or 0: the chip's figure)")
    if dcn_gbps:
        chip = dataclasses.replace(chip, dcn_bandwidth=dcn_gbps * 1e9 / 8, dcn_source=f"--dcn_gbps={dcn_gbps:g} a chip")
    devices = list(devices) or tpu_topology.topology_devices(accelerator_type, num_slices)
    n = len(devices)
    mesh = sharding.make_mesh(run.mesh, devices)
    rules = run.mesh.logical_rules
    sharding.check_vocab_split(run.model.vocab_size, run.model.vocab_multiple, run.model.padded_vocab_size, mesh, rules)
    rows = run.train.batch_size // run.train.grad_accum_steps
    if rows % sharding.data_parallel_size(mesh):
        raise ValueError(
            f"train.batch_size={run.train.batch_size} (per micro-batch {rows}) does not split over the "
            f"data-parallel size {sharding.data_parallel_size(mesh)} of {dict(mesh.shape)}"
        )
    optimizer = optim.make_optimizer(run.train)
    state, shardings = train_state.abstract_train_state(run.model, optimizer.tx, mesh, rules)
    languages = len(run.data.languages) or LANGUAGES
    batch = abstract_batch(run.train.batch_size, run.data.seq_length, mesh)
    step = steps.make_train_step(
        run, optimizer, mesh, shardings, num_languages=languages, compiler_options=compiler_options
    )
    began = time.perf_counter()
    compiled = _compile(step.lower(state, batch))
    compile_s = time.perf_counter() - began
    text = compiled.as_text()
    if hlo_path:
        with open(hlo_path, "w") as f:
            f.write(text)
    mem, cost = memory(compiled), costs(compiled)
    # A multi-slice program is compiled per slice: its replica groups name that slice's devices.
    slice_of = [getattr(d, "slice_index", 0) for d in mesh.devices.flat]  # device id = position in the mesh
    comm = hlo_cost.collective_bytes(text, n // num_slices, slice_of)
    plan = memory_plan.plan(run, n)
    formula_flops = flops.step_flops_per_device(run, n)
    # XLA's cost analysis counts a loop body once: a scan over the layers adds the other layers' FLOPs from
    # the formula, and its bytes accessed are scaled by the same factor (an estimate; see the docstring).
    scanned = run.model.scan_layers and run.model.num_layers > 1
    xla_flops, xla_bytes = cost["flops"], cost["bytes_accessed"]
    if scanned:
        cost["flops"] = xla_flops + (run.model.num_layers - 1) * flops.layer_flops_per_device(run, n)
        cost["bytes_accessed"] = xla_bytes * cost["flops"] / xla_flops if xla_flops else xla_bytes
    bound = roofline(cost["flops"], cost["bytes_accessed"], comm, chip)
    tokens = run.train.batch_size * run.data.seq_length
    report: dict[str, Any] = {
        "topology": accelerator_type,
        "topology_name": tpu_topology.topology_name(accelerator_type),
        "num_slices": num_slices,
        "num_devices": n,
        "device_kind": devices[0].device_kind,
        "mesh": dict(mesh.shape),
        "remat": run.model.remat,
        "num_layers": run.model.num_layers,
        "batch_size": run.train.batch_size,
        "grad_accum_steps": run.train.grad_accum_steps,
        "seq_length": run.data.seq_length,
        "hbm_bytes": chip.hbm_bytes,
        "memory": mem,
        "plan_total": plan["total"],
        "flops": cost["flops"],
        "xla_flops": xla_flops,
        "xla_bytes_accessed": xla_bytes,
        "scan_layers": bool(scanned),
        "formula_flops": formula_flops,
        "bytes_accessed": cost["bytes_accessed"],
        "collectives": comm,
        "roofline": bound,
        "tokens_per_s_bound": tokens / bound["bound_s"] if bound["bound_s"] > 0 else None,
        "chip_source": chip.source,
        "dcn_source": chip.dcn_source,
        "compile_s": compile_s,
        "fits": mem["total"] <= chip.hbm_bytes,
    }
    if eval_step:
        evaluate = steps.make_eval_step(
            run.model,
            run.data.mlm_rate,
            mesh,
            shardings,
            num_languages=languages,
            rules=rules,
            compiler_options=compiler_options,
        )
        eval_batch = abstract_batch(run.train.eval_batch_size, run.data.seq_length, mesh)
        began = time.perf_counter()
        compiled_eval = _compile(evaluate.lower(state.params, eval_batch))
        report["eval"] = {"memory": memory(compiled_eval), "compile_s": time.perf_counter() - began}
        report["fits"] = report["fits"] and report["eval"]["memory"]["total"] <= chip.hbm_bytes
    return report


def _gib(x: float) -> str:
    return f"{x / GIB:.2f} GiB"


def format_report(r: dict[str, Any]) -> str:
    """The human-readable report (the ``fits:`` / ``does not fit:`` verdict line is printed apart)."""
    m, hbm = r["memory"], r["hbm_bytes"]
    mesh = " x ".join(f"{k}={v}" for k, v in r["mesh"].items())
    c = r["collectives"]
    t = r["roofline"]["terms_s"]
    ratio = m["total"] / r["plan_total"] if r["plan_total"] else float("nan")
    scan = r.get("scan_layers")
    flops_note = (
        f"XLA {r['xla_flops'] / 1e12:.4g} with the scanned layer once + {r['num_layers'] - 1} layers by the formula; "
        if scan
        else ""
    )
    lines = [
        f"{r['topology']} ({r['topology_name']}{', x' + str(r['num_slices']) + ' slices' if r['num_slices'] > 1 else ''}):"
        f" {r['num_devices']} x {r['device_kind']}; mesh {mesh}; remat={r['remat']}; {r['num_layers']} layers;"
        f" batch {r['batch_size']} x {r['seq_length']} (grad_accum_steps={r['grad_accum_steps']})",
        f"  train step compiled in {r['compile_s']:.1f} s",
        f"  memory per device: arguments {_gib(m['arguments'])}, outputs {_gib(m['outputs'])}, temporaries "
        f"{_gib(m['temporaries'])}, aliased {_gib(m['aliased'])} -> total {_gib(m['total'])} "
        f"= {m['total'] / hbm:.0%} of {_gib(hbm)} HBM; the plan (train --plan) says {_gib(r['plan_total'])} "
        f"(compiler / plan = {ratio:.2f})",
        f"  FLOPs per device: {r['flops'] / 1e12:.4g} TFLOP ({flops_note}formula {r['formula_flops'] / 1e12:.4g}; "
        f"compiler / formula = {r['flops'] / r['formula_flops']:.3f})",
        "  bytes sent per device (ring convention, loops x trip count): "
        + ", ".join(f"{k} {c[k] / 1e9:.3f} GB" for k in c if k not in ("total", "dcn") and c[k])
        + f"; total {c['total'] / 1e9:.3f} GB"
        + (f", of which {c['dcn'] / 1e9:.3f} GB cross slices (DCN)" if c.get("dcn") else ""),
        f"  roofline: compute {t['compute'] * 1e3:.1f} ms (FLOPs / peak), HBM {'~' if scan else ''}"
        f"{t['hbm'] * 1e3:.1f} ms (bytes accessed {r['bytes_accessed'] / 1e9:.1f} GB / bandwidth"
        f"{'; XLA counts the scanned layer once: its bytes scaled like the FLOPs' if scan else ''}), ICI {t['ici'] * 1e3:.1f} ms (collective "
        f"bytes / one chip's send bandwidth)"
        + (f", DCN {t['dcn'] * 1e3:.1f} ms (cross-slice bytes / {r['dcn_source']})" if t.get("dcn") else "")
        + f" -> step >= {r['roofline']['bound_s'] * 1e3:.1f} ms, "
        f"{r['roofline']['limited_by']}-bound; <= {r['tokens_per_s_bound']:,.0f} tokens/s",
        f"  chip figures: {r['chip_source']}",
    ]
    if "eval" in r:
        e = r["eval"]
        lines.append(
            f"  eval step compiled in {e['compile_s']:.1f} s; memory per device {_gib(e['memory']['total'])}"
            f" = {e['memory']['total'] / hbm:.0%} of HBM"
        )
    return "\n".join(lines)


def verdict(r: dict[str, Any]) -> str:
    peak = max(r["memory"]["total"], r.get("eval", {}).get("memory", {}).get("total", 0))
    word = "fits" if r["fits"] else "does not fit"
    return (
        f"{word}: {r['topology']} x{r['num_slices']}, {peak / GIB:.2f} of {r['hbm_bytes'] / GIB:.2f} GiB per "
        f"device, step >= {r['roofline']['bound_s'] * 1e3:.1f} ms ({r['roofline']['limited_by']}-bound)"
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m xlmp_jax.aot", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", required=True, help="run config (configs/<name>.py)")
    p.add_argument("--topology", required=True, help="TPU accelerator type: v4-32, v5litepod-256, v5p-128, v6e-64")
    p.add_argument("--num_slices", type=int, default=1, help="> 1: a multi-slice job (mesh.dcn_data = slices)")
    p.add_argument("--no_eval", action="store_true", help="compile the train step only")
    p.add_argument("--layers", type=int, default=0, help="compile with this many encoder layers (0 = the config's)")
    p.add_argument(
        "--dcn_gbps", type=float, default=0.0, help="cross-slice bandwidth per chip in Gbps (0: the chip's figure)"
    )
    p.add_argument("--json", default="", help="also write the numbers here")
    p.add_argument("--hlo", default="", help="also write the compiled train step's HLO text here")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args, extra = build_parser().parse_known_args(argv)
    jax.config.update("jax_platforms", "cpu")  # the TPU is only a compile target here
    try:
        try:
            overrides = split_overrides(extra)
        except LaunchError as e:
            raise ValueError(str(e)) from None
        run = load_run(args.config, overrides, args.topology, args.num_slices, args.layers)
        report = analyse(
            run, args.topology, args.num_slices, eval_step=not args.no_eval, hlo_path=args.hlo, dcn_gbps=args.dcn_gbps
        )
    except DoesNotFit as e:
        print(f"does not fit: {args.topology} x{args.num_slices}: {e}", flush=True)
        return DOES_NOT_FIT
    except Exception as e:  # a bad flag, config or topology: one line, not a traceback
        print(f"xlmp_jax.aot: error: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        return FAILED
    print(format_report(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    print(verdict(report), flush=True)
    return FITS if report["fits"] else DOES_NOT_FIT


if __name__ == "__main__":
    sys.exit(main())
