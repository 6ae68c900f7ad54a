"""Where a train step's time goes: a jax.profiler trace of a few steps, summed by op/kernel name.

Builds one bench variant (as ``bench/train_throughput.py`` does), warms it up, traces ``--steps`` steps
with ``jax.profiler.trace(..., create_perfetto_trace=True)`` and aggregates the trace's complete
events by name into a table (share of traced device time, or of XLA CPU op time on the CPU). The raw
trace stays in ``--trace_dir`` for Perfetto/TensorBoard.

Model variants go through ``--overrides`` (ModelConfig fields), e.g. cuDNN's fused attention on a GPU:
``--overrides='{"attention": "cudnn", "attention_dropout": 0.0}'``.

  python bench/profile_step.py --size=base --variant=xlmp --batch=8 --seq=128          # CPU, fp32
  python bench/profile_step.py --size=base --batch=32 --seq=512 --dtype=bfloat16       # GPU
  python bench/profile_step.py --smoke
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import harness, op_groups  # noqa: E402
from bench.train_throughput import VARIANTS  # noqa: E402

CATEGORIES = (
    ("matmul", r"gemm|cutlass|cublas|dot|matmul|sm90_xmma|nvjet|convolution|ynn_fusion"),
    ("attention (fused)", r"cudnn|fmha|flash|custom-call"),
    ("reduce", r"reduce|softmax"),
    ("scatter/gather", r"scatter|gather|dynamic-slice|dynamic-update"),
    ("rng", r"rng|threefry|random|philox"),
    ("copy/transpose", r"copy|transpose|memcpy|memset"),
    ("fusion (elementwise)", r"fusion|loop|input_|elementwise|convert|add|multiply"),
)


def categorize(name: str) -> str:
    low = name.lower()
    for label, pattern in CATEGORIES:
        if re.search(pattern, low):
            return label
    return "other"


def summarize_trace(trace_dir: str, top: int = 25, platform: str = "gpu", hlo_text: str = "") -> dict:
    """Sums the durations of the trace's complete events per name, on device (or XLA op) threads; with the
    compiled step's ``hlo_text``, also per model part (``bench/op_groups.py``)."""
    files = glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True)
    files += glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True)
    if not files:
        return {"error": f"no trace file under {trace_dir}"}
    with gzip.open(sorted(files, key=os.path.getmtime)[-1], "rt") as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    names = {}  # (pid, tid) -> thread name; pid -> process name
    for e in events:
        if e.get("ph") == "M" and e.get("name") in ("process_name", "thread_name"):
            key = e["pid"] if e["name"] == "process_name" else (e["pid"], e.get("tid"))
            names[key] = e.get("args", {}).get("name", "")
    device_pids = set()
    if platform != "cpu":  # on a CPU run an idle GPU tracer may still name a process /device:GPU:0
        device_pids = {pid for pid, n in names.items() if isinstance(pid, int) and re.search(r"/device:(GPU|TPU)", n)}
    totals: collections.Counter = collections.Counter()
    counts: collections.Counter = collections.Counter()
    groups: collections.Counter = collections.Counter()
    stacks = op_groups.name_stacks(hlo_text) if hlo_text else {}
    for e in events:
        if e.get("ph") != "X" or "dur" not in e:
            continue
        pid, tid = e.get("pid"), e.get("tid")
        if device_pids:
            if pid not in device_pids:
                continue
            thread = names.get((pid, tid), "")
            if re.search(r"XLA Modules|Steps|XLA TraceMe|Source", thread):  # keep kernels / XLA ops only
                continue
        else:  # CPU: XLA's op-level events (thunks), not Python or module-level spans
            thread = names.get((pid, tid), "")
            name = e.get("name", "")
            if "XLA Ops" not in thread and not re.match(r"^[a-z_.\-0-9]+(\.\d+)?$", name):
                continue
            if name.startswith(("jit_", "PjitFunction", "ExecuteHelper", "ThunkExecutor", "$")):
                continue
        totals[e["name"]] += e["dur"]
        counts[e["name"]] += 1
        if stacks:
            groups[op_groups.group_of_event(e["name"], e.get("args"), stacks)] += e["dur"]
    total = sum(totals.values()) or 1.0
    by_cat: collections.Counter = collections.Counter()
    for name, dur in totals.items():
        by_cat[categorize(name)] += dur
    return {
        "traced_op_time_ms": total / 1e3,
        "device_pids": sorted(device_pids),
        "by_category": {k: round(v / total, 4) for k, v in by_cat.most_common()},
        "by_group": {k: round(v / total, 4) for k, v in groups.most_common()},
        "top": [
            {"name": n[:120], "ms": round(d / 1e3, 3), "share": round(d / total, 4), "count": counts[n]}
            for n, d in totals.most_common(top)
        ],
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="base")
    p.add_argument("--variant", default="xlmp", choices=tuple(v for v in VARIANTS if v != "torch"))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--overrides", default="", help="ModelConfig fields as JSON")
    p.add_argument("--feed", default="device", choices=harness.FEEDS, help="where each step's batch comes from")
    p.add_argument("--cache_dir", default="", help="JAX's persistent compilation cache (the device run's)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--trace_dir", default="")
    p.add_argument("--json", default="")
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args(argv)
    if args.smoke:
        args.size, args.batch, args.seq, args.warmup, args.steps = "tiny", 2, 16, 1, 1
    import jax

    if args.cache_dir:
        from xlmp_jax.runtime import compile_cache

        compile_cache.enable(args.cache_dir, environ={})
    spec = VARIANTS[args.variant]
    overrides = json.loads(args.overrides) if args.overrides else {}
    model_cfg = harness.model_config(args.size, pool=spec["pool"], dtype=args.dtype, **overrides)
    step, _ = harness.make_xlmp_step(
        model_cfg, batch_size=args.batch, seq_length=args.seq, dense_head=spec["dense"], feed=args.feed
    )
    for _ in range(args.warmup):
        step()
    trace_dir = args.trace_dir or tempfile.mkdtemp(prefix="xlmp_trace_")
    t0 = time.perf_counter()
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        for _ in range(args.steps):
            step()
    wall = (time.perf_counter() - t0) / args.steps
    summary = harness.finish(
        "profile_step",
        args.json,
        platform=jax.devices()[0].platform,
        size=args.size,
        variant=args.variant,
        batch=args.batch,
        seq=args.seq,
        dtype=args.dtype,
        overrides=overrides,
        feed=args.feed,
        step_impl="project",
        traced_step_wall_s=wall,
        trace_dir=trace_dir,
        **summarize_trace(trace_dir, platform=jax.devices()[0].platform, hlo_text=step.compiled.as_text()),
    )
    print(f"{args.size} {args.variant} B={args.batch} T={args.seq} {args.dtype} {overrides}: {wall * 1e3:.1f} ms/step")
    if "top" in summary:
        print("by category:", summary["by_category"])
        print("by model part:", summary["by_group"])
        for row in summary["top"]:
            print(f"  {row['ms'] / args.steps:9.2f} ms/step {row['share']:6.1%} x{row['count']:<5} {row['name']}")
    return summary


if __name__ == "__main__":
    main()
