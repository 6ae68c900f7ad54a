"""The TPU compile table of BENCHMARKS.md: base and large (and the baselines) compiled for Cloud TPU slices.

    python -m bench.aot_table --workers=2           # the whole table (see BENCHMARKS.md for its wall time)
    python -m bench.aot_table --configs=tiny --topologies=v5litepod-4 --layouts=launcher,data --check= --json=
                                                    # a smoke test (about a minute)

For each run config, slice and layout, the run's train step is compiled by the TPU compiler on this machine
(``xlmp_jax.aot``: libtpu's compile-only devices, the trainer's state, mesh and step) and reported per
device: compiled memory against HBM and the plan (``train --plan``), fits or not, collective bytes, the
roofline bound (``xlmp_jax.aot.roofline``, datasheet figures) and the tokens/s it implies; the best fitting
layout per config and slice (highest tokens/s bound) is named.

Depth: a full-depth compile of large as a Python loop of 24 layers takes ~7 min on 2 cores, so by default
every point is compiled with ``model.scan_layers=True`` (one layer's program under ``nn.scan``; the numbers
are the loop's: same FLOPs and collectives, see ``--check``). ``--scan=0 --depths=a,b`` instead compiles
loops of ``a`` and ``b`` layers and extends every per-device quantity linearly to the config's depth,
v(N) = v(a) + (N - a) (v(b) - v(a)) / (b - a). ``--check=config:slice`` compiles that launcher row once
more at full depth as a Python loop and prints the row's values against it (memory, FLOPs, bytes, compile
time): the scan-vs-loop comparison, or the extrapolation's error.

Layouts per slice (``--layouts``): ``launcher`` = ``launch.layouts``' entry; ``data`` = data parallel,
``fsdp`` = FSDP over all chips, ``fsdp_tp`` = FSDP with tensor = 4, each with the remat of ``--remats``.
Baselines (``*_baseline``) get the launcher's layout only. ``--workers=2`` runs two compiles at once
(each is mostly one core).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jax

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "aot_table.json")
TOPOLOGIES = ("v4-32", "v5litepod-64", "v5litepod-256", "v5p-128", "v6e-64")
MESHES = {
    "data": ["--config.mesh.data=-1", "--config.mesh.fsdp=1", "--config.mesh.tensor=1"],
    "fsdp": ["--config.mesh.data=1", "--config.mesh.fsdp=-1", "--config.mesh.tensor=1"],
    "fsdp_tp": ["--config.mesh.data=1", "--config.mesh.fsdp=-1", "--config.mesh.tensor=4"],
}
GIB = 2**30


def layouts_for(config: str, topology: str, names: list[str], remats: list[str]) -> list[tuple[str, list[str]]]:
    """(label, overrides) of every layout to compile for ``config`` on ``topology``, the launcher's first."""
    from launch import layouts

    entry = layouts.layout_overrides(f"configs/{config}.py", topology)
    out = [("launcher", entry)] if "launcher" in names else []
    if config.endswith("_baseline"):
        return out or [("launcher", entry)]
    for name in names:
        if name == "launcher":
            continue
        if name not in MESHES:
            raise ValueError(f"--layouts: {name!r} is not one of launcher, {', '.join(MESHES)}")
        out += [(f"{name}/{remat}", [*MESHES[name], f"--config.model.remat={remat}"]) for remat in remats]
    return out


def _same_run(a: list[str], b: list[str]) -> bool:
    """Whether two override lists set the same fields to the same values (order aside)."""
    return sorted(a) == sorted(b)


def _numbers(report: dict[str, Any]) -> dict[str, float]:
    """The depth-dependent quantities of an ``xlmp_jax.aot.analyse`` report, flat."""
    flat = {f"memory.{k}": float(v) for k, v in report["memory"].items()}
    flat.update({f"collectives.{k}": float(v) for k, v in report["collectives"].items()})
    flat.update(flops=report["flops"], bytes_accessed=report["bytes_accessed"], compile_s=report["compile_s"])
    return flat


def extrapolate(a: dict[str, float], depth_a: int, b: dict[str, float], depth_b: int, depth: int) -> dict[str, float]:
    """Every quantity extended linearly from depths ``depth_a`` < ``depth_b`` to ``depth``."""
    if not 0 < depth_a < depth_b:
        raise ValueError(f"--depths: need 0 < a < b, got {depth_a}, {depth_b}")
    return {k: a[k] + (depth - depth_a) * (b[k] - a[k]) / (depth_b - depth_a) for k in a}


def point(config: str, topology: str, label: str, overrides: list[str], depths: tuple[int, ...]) -> dict[str, Any]:
    """One row: the layout compiled at full depth (``depths`` empty), or at the two ``depths`` and extrapolated."""
    _cpu_only()
    from xlmp_jax import aot
    from xlmp_jax.runtime import tpu_topology
    from xlmp_jax.training import flops, memory

    chip, _ = tpu_topology.parse_type(topology)
    full = aot.load_run(f"configs/{config}.py", overrides, topology, 1)
    depth = full.model.num_layers
    n = tpu_topology.parse_type(topology)[1]
    row: dict[str, Any] = {
        "config": config,
        "topology": topology,
        "layout": label,
        "overrides": overrides,
        "mesh": None,
        "remat": full.model.remat,
        "grad_accum_steps": full.train.grad_accum_steps,
        "num_layers": depth,
        "depths": list(depths),
        "scan_layers": full.model.scan_layers,
        "hbm_bytes": chip.hbm_bytes,
        "plan_total": memory.plan(full, n)["total"],
        "formula_flops": flops.step_flops_per_device(full, n),
    }
    measured = []
    for d in depths if depths and depth > depths[0] else (depth,):
        run = aot.load_run(f"configs/{config}.py", overrides, topology, 1, layers=d)
        try:
            report = aot.analyse(run, topology, eval_step=False)
        except aot.DoesNotFit as e:
            row.update(fits=False, overshoot=str(e), compiled_at=d)
            return row
        row["mesh"] = report["mesh"]
        measured.append(_numbers(report))
        print(f"# {config} {topology} {label} L={d}: {report['compile_s']:.0f} s", flush=True)
    if len(measured) == 1:
        est = measured[0]
    else:
        est = extrapolate(measured[0], depths[0], measured[1], depths[1], depth)
    comm = {"total": est["collectives.total"], "dcn": est.get("collectives.dcn", 0.0)}
    bound = aot.roofline(est["flops"], est["bytes_accessed"], comm, chip)
    row.update(
        measured=measured,
        estimate=est,
        roofline=bound,
        tokens_per_s_bound=full.train.batch_size * full.data.seq_length / bound["bound_s"],
        fits=est["memory.total"] <= chip.hbm_bytes,
    )
    return row


def check_full_depth(row: dict[str, Any]) -> dict[str, Any]:
    """``row``'s layout compiled at full depth as a Python loop (``model.scan_layers=False``), against the row
    (scanned, or extrapolated from shallow loops): the relative difference of each quantity."""
    _cpu_only()
    from xlmp_jax import aot

    config, topology = row["config"], row["topology"]
    overrides = [o for o in row["overrides"] if not o.startswith("--config.model.scan_layers")]
    run = aot.load_run(f"configs/{config}.py", [*overrides, "--config.model.scan_layers=False"], topology, 1)
    began = time.perf_counter()
    full = _numbers(aot.analyse(run, topology, eval_step=False))
    return {
        "config": config,
        "topology": topology,
        "layout": row["layout"],
        "row_is": "scanned" if row["scan_layers"] else f"extrapolated from depths {row['depths']}",
        "wall_s": time.perf_counter() - began,
        "full_depth": full,
    }


CHECKED = ["memory.total", "memory.temporaries", "memory.arguments", "flops", "bytes_accessed", "collectives.total"]


def _compare(check: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Adds the table row's values next to the full-depth loop's, and their relative differences."""
    row = next(
        r
        for r in rows
        if (r["config"], r["topology"], r["layout"]) == (check["config"], check["topology"], check["layout"])
    )
    if "estimate" not in row:
        return {**check, "extrapolated": {}, "relative_error": {}}
    full, est = check["full_depth"], row["estimate"]
    keys = [*CHECKED, "compile_s"]
    return {
        **check,
        "full_depth": {k: full[k] for k in keys},
        "extrapolated": {k: est[k] for k in keys},
        "relative_error": {k: (est[k] - full[k]) / full[k] if full[k] else 0.0 for k in CHECKED},
    }


def markdown(rows: list[dict[str, Any]], check: dict[str, Any] | None) -> str:
    """The table (one row per config, slice and layout) and the best layout per config and slice."""
    out = [
        "| config | slice | layout | mesh d,f,t | remat | accum | GiB/device (compiled) | HBM GiB | plan GiB | "
        "compiled / plan | fits | collectives GB/step | compute / HBM / ICI ms | bound ms | tokens/s bound | "
        "compile s (est. full) |",
        "|" + " --- |" * 16,
    ]
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        if "error" in r:
            out.append(
                f"| {r['config']} | {r['topology']} | {r['layout']} | error: {r['error'].splitlines()[0][:120]} |"
            )
            continue
        mesh = ",".join(str(v) for v in r["mesh"].values()) if r.get("mesh") else "-"
        head = f"| {r['config']} | {r['topology']} | {r['layout']} | {mesh} | {r['remat']} | {r['grad_accum_steps']} |"
        plan = f"{r['plan_total'] / GIB:.2f}"
        if "estimate" not in r:
            out.append(
                f"{head} > HBM at {r['compiled_at']} layer(s) | {r['hbm_bytes'] / GIB:.0f} | {plan} | - | no | "
                "- | - | - | - | - |"
            )
            continue
        e, t = r["estimate"], r["roofline"]["terms_s"]
        out.append(
            f"{head} {e['memory.total'] / GIB:.2f} | {r['hbm_bytes'] / GIB:.0f} | {plan} | "
            f"{e['memory.total'] / r['plan_total']:.2f} | {'yes' if r['fits'] else 'no'} | "
            f"{e['collectives.total'] / 1e9:.2f} | {t['compute'] * 1e3:.0f} / {t['hbm'] * 1e3:.0f} / "
            f"{t['ici'] * 1e3:.0f} | {r['roofline']['bound_s'] * 1e3:.0f} ({r['roofline']['limited_by']}) | "
            f"{r['tokens_per_s_bound']:,.0f} | {e['compile_s']:.0f} |"
        )
        key = (r["config"], r["topology"])
        if r["fits"] and (key not in best or r["tokens_per_s_bound"] > best[key]["tokens_per_s_bound"]):
            best[key] = r
    out += ["", "Best fitting layout (highest tokens/s bound) per config and slice:", ""]
    out += [
        f"* {c} on {t}: {r['layout']} ({r['tokens_per_s_bound']:,.0f} tokens/s bound)" for (c, t), r in best.items()
    ]
    if check:
        errs = ", ".join(f"{k} {v:+.1%}" for k, v in check["relative_error"].items())
        loop, other = check["full_depth"], check["extrapolated"]
        out += [
            "",
            f"Check: {check['config']} on {check['topology']} ({check['layout']}) compiled at full depth as a Python "
            f"loop in {check['wall_s']:.0f} s (train step {loop['compile_s']:.0f} s; the table's row, "
            f"{check['row_is']}: {other['compile_s']:.0f} s). Table row vs loop: {errs}.",
        ]
    return "\n".join(out)


def _cpu_only() -> None:
    jax.config.update("jax_platforms", "cpu")  # the TPU is only a compile target (also in worker processes)


def _child(send, fn, args) -> None:
    # libtpu takes a machine-wide lock file when it loads; compile-only processes touch no TPU, so they share it.
    os.environ["ALLOW_MULTIPLE_LIBTPU_LOAD"] = "1"
    try:
        send.send(("ok", fn(*args)))
    except Exception as e:  # noqa: BLE001 -- reported as the row's error
        send.send(("error", f"{type(e).__name__}: {e}"))


def _isolated(fn, job: tuple, *args) -> dict[str, Any]:
    """``fn(*args)`` in a fresh process; a crash (a signal) or an exception becomes an error row for ``job``."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(send, fn, args))
    child.start()
    send.close()
    try:
        status, value = receive.recv()
    except EOFError:  # the process died without an answer
        status, value = "error", None
    child.join()
    if status == "ok":
        return value
    reason = value or f"the compiler process died (exit {child.exitcode}: signal {-child.exitcode})"
    print(f"# {job[0]} {job[1]} {job[2]}: {reason.splitlines()[0][:300]}", flush=True)
    return {"config": job[0], "topology": job[1], "layout": job[2], "overrides": job[3], "error": reason}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="base,large,base_baseline,large_baseline")
    p.add_argument("--topologies", default=",".join(TOPOLOGIES))
    p.add_argument("--layouts", default="launcher,data", help="launcher, data, fsdp, fsdp_tp (comma-separated)")
    p.add_argument("--remats", default="none", help="remat policies for the non-launcher layouts (none,full,...)")
    p.add_argument("--scan", type=int, default=1, help="1: compile with model.scan_layers=True (one layer's program)")
    p.add_argument("--depths", default="", help="'a,b': compile loops at depths a and b and extrapolate ('' = full)")
    p.add_argument(
        "--check",
        default="large:v5litepod-256",
        help="config:slice whose launcher row is compiled again at full depth as a Python loop, to compare ('' = none)",
    )
    p.add_argument("--workers", type=int, default=1, help="compiles at once (each is mostly one core)")
    p.add_argument("--json", default=RESULTS, help="where to write the rows ('' = nowhere)")
    args = p.parse_args(argv)
    _cpu_only()
    depths = tuple(int(x) for x in args.depths.split(",")) if args.depths else ()
    if depths and len(depths) != 2:
        raise ValueError(f"--depths={args.depths!r}: give two depths, e.g. 1,2 (or '' for full depth)")
    scan = ["--config.model.scan_layers=True"] if args.scan and not depths else []
    jobs = []
    for topology in args.topologies.split(","):
        for config in args.configs.split(","):
            for label, overrides in layouts_for(config, topology, args.layouts.split(","), args.remats.split(",")):
                job = (config, topology, label, list(dict.fromkeys([*scan, *overrides])), depths)
                if not any(j[:2] == job[:2] and _same_run(j[3], job[3]) for j in jobs):  # the launcher's, again
                    jobs.append(job)
    if args.check and args.check.split(":")[0] not in args.configs.split(","):
        raise ValueError(f"--check={args.check}: its config is not in --configs={args.configs}")
    began = time.perf_counter()
    # Each compile in a process of its own: a compiler crash (libtpu has overflowed its stack on some layouts)
    # becomes that row's error instead of the end of the table.
    with ThreadPoolExecutor(max(args.workers, 1)) as pool:
        futures = [pool.submit(_isolated, point, job, *job) for job in jobs]
        check_future = None
        if args.check:
            config, topology = args.check.split(":")
            target = next(j for j in jobs if j[0] == config and j[1] == topology and j[2] == "launcher")
            check_row = {
                **dict(zip(("config", "topology", "layout", "overrides"), target[:4], strict=True)),
                "scan_layers": bool(scan),
                "depths": list(depths),
            }
            check_future = pool.submit(_isolated, check_full_depth, target, check_row)
        rows = [f.result() for f in futures]
        check_raw = check_future.result() if check_future else None
    if check_raw is not None and "error" in check_raw:
        check_raw = None
    check = _compare(check_raw, rows) if check_raw else None
    from bench.harness import machine_info

    result = {
        "bench": "aot_table",
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "machine": machine_info(),
        "jax": jax.__version__,
        "wall_s": time.perf_counter() - began,
        "rows": rows,
        "check": check,
    }
    print(markdown(rows, check))
    print(f"\n# {len(rows)} rows in {result['wall_s']:.0f} s", flush=True)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
