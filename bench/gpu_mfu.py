"""GPU throughput, MFU and device memory of the project's train step (base or large, bf16, seq 512).

Each configuration runs in its own subprocess (``bench/train_throughput.py --worker``), so its
``memory_stats()['peak_bytes_in_use']`` is its own; the parent never initialises the GPU. MFU is
reported against the card's dense bf16 datasheet peak (looked up from ``nvidia-smi``'s name) and
against the bf16 matmul rate measured in the same run; memory against ``xlmp_jax.training.memory``'s plan (what
``train --plan`` prints) and XLA's memory analysis of the compiled step. A configuration that runs out
of memory is reported as ``OOM`` (that is how the largest batch is found).

Device time is short, and one base compile took 40-66 s there: ``--precompile=N --cache_dir=DIR`` first
compiles every configuration in N parallel processes into JAX's persistent cache (nothing is timed
meanwhile), so each timed run loads its program; ``--budget_s`` starts no timed run after that many
seconds (the list is in priority order), and ``--profile_best`` ends with ``bench/profile_step.py`` on
the fastest base configuration, its time summed by kernel and by model part (``bench/op_groups.py``).

  python bench/gpu_mfu.py                           # the published H100 run (see BENCHMARKS.md)
  python bench/gpu_mfu.py --configs=b32,b32_fused   # a subset
  bash bench/run_device.sh OUT                      # issue 28's one device call (--configs=issue28)
  python bench/gpu_mfu.py --smoke                   # CPU, tiny model, one step (tests/test_bench.py)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import harness  # noqa: E402

# Dense bf16 tensor-core peaks from NVIDIA's datasheets (FLOP/s, no sparsity).
DATASHEET_BF16 = {
    "H100 80GB HBM3": 989.4e12,  # SXM5
    "H100 SXM": 989.4e12,
    "H100 NVL": 835e12,
    "H100 PCIe": 756e12,
    "H200": 989.4e12,
    "A100": 312e12,
}

CUDNN = {"attention": "cudnn", "attention_dropout": 0.0}
RBG = {"JAX_DEFAULT_PRNG_IMPL": "rbg"}  # tuning experiment: cheaper dropout bits than threefry


class Config(NamedTuple):
    """One measured configuration: the model size, bench variant (``train_throughput.VARIANTS``), batch,
    ModelConfig overrides, extra environment of its worker, and where its batches come from
    (``harness.FEEDS``)."""

    variant: str
    batch: int
    overrides: dict
    env: dict
    size: str = "base"
    feed: str = "device"


CONFIGS: dict[str, Config] = {
    "b32": Config("xlmp", 32, {}, {}),
    "b32_rbg": Config("xlmp", 32, {}, RBG),
    "b32_fused": Config("xlmp", 32, {"attention_dropout": 0.0}, {}),
    "b32_fused_rbg": Config("xlmp", 32, {"attention_dropout": 0.0}, RBG),
    "b32_nopool": Config("xlmp_nopool", 32, {}, {}),
    "b32_nopool_fused": Config("xlmp_nopool", 32, {"attention_dropout": 0.0}, {}),
    "b32_dense": Config("xlmp_dense", 32, {}, {}),
    "b64": Config("xlmp", 64, {}, {}),
    "b64_fused": Config("xlmp", 64, {"attention_dropout": 0.0}, {}),
    "b64_fused_rbg": Config("xlmp", 64, {"attention_dropout": 0.0}, RBG),
    "b128_fused": Config("xlmp", 128, {"attention_dropout": 0.0}, {}),
    "b128_fused_remat": Config("xlmp", 128, {"attention_dropout": 0.0, "remat": "full"}, {}),
    "b128_fused_dots": Config("xlmp", 128, {"attention_dropout": 0.0, "remat": "dots"}, {}),
    # cuDNN fused attention (model.attention="cudnn"; it has no attention dropout, see BENCHMARKS.md)
    "b32_cudnn": Config("xlmp", 32, CUDNN, {}),
    "b64_cudnn": Config("xlmp", 64, CUDNN, {}),
    "b128_cudnn": Config("xlmp", 128, CUDNN, {}),
    "b256_cudnn": Config("xlmp", 256, CUDNN, {}),
    "b128_cudnn_remat": Config("xlmp", 128, {**CUDNN, "remat": "full"}, {}),
    # Issue 28's device call, in the order it measures them (a run out of time drops the last ones):
    # both attention recipes at base and large first, then the candidates of BENCHMARKS.md section 5's
    # H100 profile, each against base_b128_cudnn: batch, remat policy, PRNG, host feed and prefetch.
    "base_b32_xla": Config("xlmp", 32, {}, {}),  # the model as is: attention dropout 0.1, XLA attention
    "base_b128_cudnn": Config("xlmp", 128, CUDNN, {}),
    "large_b32_xla": Config("xlmp", 32, {}, {}, size="large"),
    "large_b32_cudnn": Config("xlmp", 32, CUDNN, {}, size="large"),
    "base_b32_cudnn": Config("xlmp", 32, CUDNN, {}),
    "base_b192_cudnn": Config("xlmp", 192, CUDNN, {}),  # the plan's largest batch without remat
    "base_b128_cudnn_dots": Config("xlmp", 128, {**CUDNN, "remat": "dots"}, {}),
    "base_b256_cudnn_dots": Config("xlmp", 256, {**CUDNN, "remat": "dots"}, {}),
    "base_b128_cudnn_rbg": Config("xlmp", 128, CUDNN, RBG),
    "base_b128_cudnn_host": Config("xlmp", 128, CUDNN, {}, feed="host"),
    "base_b128_cudnn_prefetch": Config("xlmp", 128, CUDNN, {}, feed="prefetch"),
    "large_b64_cudnn_dots": Config("xlmp", 64, {**CUDNN, "remat": "dots"}, {}, size="large"),
}
SMOKE_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
DEFAULT_CONFIGS = "b32,b32_fused,b32_nopool,b32_dense,b64_fused,b128_fused"
PRESETS = {"issue28": ",".join(name for name in CONFIGS if name.startswith(("base_", "large_")))}


def gpu_name() -> str:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version,clocks.max.sm", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def datasheet_peak(name: str) -> float:
    for key, value in DATASHEET_BF16.items():
        if key in name:
            return value
    return 0.0


def matmul_worker(n: int, dtype: str) -> None:
    harness.emit(harness.matmul_peak_gflops(n=n, repeats=20, dtype=dtype))


def smoke_config(cfg: Config) -> Config:
    """The same code path at CPU size: tiny model, 2 rows; cuDNN attention (GPU only) becomes the fused
    XLA kernel, the one substitution, reported in the result's ``smoke_substituted``."""
    overrides = {**cfg.overrides}
    if overrides.get("attention") == "cudnn":
        overrides["attention"] = "fused"
    return cfg._replace(size="tiny", batch=2, overrides=overrides)


def worker_command(cfg: Config, args: argparse.Namespace, *, compile_only: bool = False) -> list[str]:
    throughput = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train_throughput.py")
    cmd = [
        throughput,
        f"--worker={cfg.variant}",
        f"--sizes={cfg.size}",
        f"--batch={cfg.batch}",
        f"--seq={args.seq}",
        f"--warmup={args.warmup}",
        f"--steps={args.steps}",
        f"--dtype={args.dtype}",
        f"--overrides={json.dumps(cfg.overrides)}",
        f"--feed={cfg.feed}",
    ]
    if args.cache_dir:
        cmd.append(f"--cache_dir={args.cache_dir}")
    if compile_only:
        cmd.append("--compile_only")
    return cmd


def worker_env(cfg: Config, *, shared: bool, smoke: bool = False) -> dict[str, str]:
    """A worker's environment: its config's, and the GPU's memory either taken whole (a timed run,
    alone on the GPU) or allocated as needed (compile-only workers, several at once). A smoke run
    compiles at XLA's lowest optimisation level (tests/helpers.py's FAST): it checks paths, not speed."""
    memory = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"} if shared else {"XLA_PYTHON_CLIENT_MEM_FRACTION": "0.95"}
    fast = {"XLA_FLAGS": SMOKE_XLA_FLAGS} if smoke else {}
    return {**memory, **fast, **cfg.env}


def precompile(configs: dict[str, Config], args: argparse.Namespace) -> dict[str, dict]:
    """Compiles every configuration's step in ``args.precompile`` parallel processes into the persistent
    cache, so the timed runs after it load instead of compiling one after the other (a base compile took
    40-66 s on the H100 host). Nothing is timed while these run."""

    programs: dict[str, str] = {}  # one compile per program: feeds differ only outside the step
    for label, cfg in configs.items():
        programs.setdefault(program_key(cfg), label)

    def one(item: tuple[str, Config]) -> tuple[str, dict]:
        label, cfg = item
        t0 = time.perf_counter()
        try:
            res = harness.run_worker(
                worker_command(cfg, args, compile_only=True),
                env=worker_env(cfg, shared=True, smoke=args.smoke),
                timeout=args.timeout,
            )
        except subprocess.TimeoutExpired:
            res = {"error": f"compile timeout after {args.timeout} s"}
        res["worker_s"] = time.perf_counter() - t0
        return label, res

    with ThreadPoolExecutor(max_workers=args.precompile) as pool:
        done = dict(pool.map(one, ((label, configs[label]) for label in programs.values())))
    return {
        label: done[label] if label in done else {"same_program_as": programs[program_key(cfg)]}
        for label, cfg in configs.items()
    }


def program_key(cfg: Config) -> str:
    """What decides the compiled step (everything but the feed)."""
    return json.dumps([cfg.variant, cfg.size, cfg.batch, cfg.overrides, cfg.env], sort_keys=True)


def run_timed(label: str, cfg: Config, args: argparse.Namespace) -> dict:
    """One configuration's timed run in its own process (its own memory peak); OOM named as such."""
    try:
        res = harness.run_worker(
            worker_command(cfg, args), env=worker_env(cfg, shared=False, smoke=args.smoke), timeout=args.timeout
        )
    except subprocess.TimeoutExpired:
        res = {"error": f"timeout after {args.timeout} s"}
    if "error" in res and "RESOURCE_EXHAUSTED" in res.get("log_tail", "") + res.get("error", ""):
        res["error"] = "OOM"
        res.pop("log_tail", None)
    res.update(label=label, size=cfg.size, batch=cfg.batch, overrides=cfg.overrides, env=cfg.env, feed=cfg.feed)
    return res


def add_rates(r: dict, peak_spec: float, mm: dict) -> None:
    """Achieved TFLOP/s, MFU against the datasheet and the measured matmul, and plan errors, in place."""
    achieved = r["tokens_per_s"]["median"] * r["flops_per_token"]
    r["achieved_tflops"] = achieved / 1e12
    r["mfu_datasheet"] = achieved / peak_spec if peak_spec else None
    r["mfu_measured_matmul"] = achieved / (mm["median"] * 1e9) if "median" in mm else None
    measured = r.get("device_peak_bytes", 0)
    r["plan_error"] = (r["plan_bytes"] - measured) / measured if measured and r.get("plan_bytes") else None
    compiled = r.get("compiled_total_bytes", 0)
    r["compiled_error"] = (compiled - measured) / measured if measured and compiled else None


def table(results: list[dict]) -> str:
    def pct(x: float | None) -> str:
        return "-" if x is None else f"{x:.1%}"

    lines = [
        f"{'config':26} {'batch':>5} {'tok/s med':>11} {'step ms':>8} {'TFLOP/s':>8} {'MFU(spec)':>9} "
        f"{'MFU(mm)':>8} {'peak GiB':>8} {'plan GiB':>8} {'plan err':>8} {'XLA GiB':>8} {'first s':>7}"
    ]
    for r in results:
        if "tokens_per_s" not in r:
            lines.append(f"{r['label']:26} {r['batch']:5} {r.get('error', '?')[:80]}")
            continue
        gib = 2.0**30
        lines.append(
            f"{r['label']:26} {r['batch']:5} {r['tokens_per_s']['median']:11,.0f} {r['step_s']['median'] * 1e3:8.1f} "
            f"{r['achieved_tflops']:8.2f} {pct(r['mfu_datasheet']):>9} {pct(r['mfu_measured_matmul']):>8} "
            f"{r.get('device_peak_bytes', 0) / gib:8.2f} {r.get('plan_bytes', 0) / gib:8.2f} "
            f"{pct(r['plan_error']):>8} {r.get('compiled_total_bytes', 0) / gib:8.2f} {r['first_step_s']:7.1f}"
        )
    return "\n".join(lines)


def profile(label: str, cfg: Config, args: argparse.Namespace) -> dict:
    """``bench/profile_step.py`` on one configuration (from the cache): time by kernel and by model part.

    A config timed on a batch already on the device is profiled with prefetch (the same program), so the
    host-to-device copies a training loop makes show up as their own part."""
    cfg = cfg._replace(feed="prefetch" if cfg.feed == "device" else cfg.feed)
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "profile_step.py")
    trace_dir = os.path.join(args.trace_dir or "/tmp", f"trace_{label}")
    cmd = [
        script,
        f"--size={cfg.size}",
        f"--variant={cfg.variant}",
        f"--batch={cfg.batch}",
        f"--seq={args.seq}",
        f"--dtype={args.dtype}",
        f"--overrides={json.dumps(cfg.overrides)}",
        f"--feed={cfg.feed}",
        f"--warmup={args.warmup}",
        "--steps=3",
        f"--trace_dir={trace_dir}",
    ]
    if args.cache_dir:
        cmd.append(f"--cache_dir={args.cache_dir}")
    try:
        res = harness.run_worker(cmd, env=worker_env(cfg, shared=False, smoke=args.smoke), timeout=args.timeout)
    except subprocess.TimeoutExpired:
        res = {"error": f"profile timeout after {args.timeout} s"}
    keep = ("error", "traced_step_wall_s", "traced_op_time_ms", "by_group", "by_category", "top", "trace_dir")
    out = {k: res[k] for k in keep if k in res}
    if "top" in out:
        out["top"] = out["top"][:15]
    return {"label": label, "feed": cfg.feed, **out}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default=DEFAULT_CONFIGS, help=f"comma list of {', '.join(CONFIGS)}, or issue28")
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--matmul_n", type=int, default=8192)
    p.add_argument("--timeout", type=float, default=300, help="seconds per configuration")
    p.add_argument("--precompile", type=int, default=0, help="compile every config first, N processes at once")
    p.add_argument("--cache_dir", default="", help="JAX persistent compilation cache (needed by --precompile)")
    p.add_argument("--budget_s", type=float, default=0, help="start no timed run after this many seconds")
    p.add_argument("--profile_best", action="store_true", help="profile the configuration with most TFLOP/s")
    p.add_argument("--trace_dir", default="", help="where --profile_best's trace goes (default /tmp)")
    p.add_argument("--json", default="")
    p.add_argument("--smoke", action="store_true", help="CPU, tiny model, every code path of the given configs")
    p.add_argument("--matmul_worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.smoke:
        args.seq, args.warmup, args.steps, args.matmul_n = 16, 1, 2, 256
        if args.configs == DEFAULT_CONFIGS:
            args.configs = "b32"
    if args.matmul_worker:
        matmul_worker(args.matmul_n, args.dtype)
        return {}
    if args.precompile and not args.cache_dir:
        p.error("--precompile needs --cache_dir (the timed runs load what it compiled from there)")
    names = PRESETS.get(args.configs, args.configs).split(",")
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        p.error(f"unknown config(s) {unknown}; expected {', '.join(CONFIGS)} or {', '.join(PRESETS)}")
    configs = {n: smoke_config(CONFIGS[n]) if args.smoke else CONFIGS[n] for n in names}

    start = time.perf_counter()
    name = gpu_name()
    peak_spec = datasheet_peak(name)
    here = os.path.abspath(__file__)
    mm = harness.run_worker([here, "--matmul_worker", f"--matmul_n={args.matmul_n}", f"--dtype={args.dtype}"])
    print("gpu:", name or "(none)", "| datasheet bf16 peak:", peak_spec / 1e12, "TFLOP/s | measured matmul:", mm)
    compiled = {}
    if args.precompile:
        compiled = precompile(configs, args)
        print(f"precompiled {len(compiled)} configs in {time.perf_counter() - start:.0f} s:", flush=True)
        for label, res in compiled.items():
            print(f"  {label:26} {res.get('compile_s', float('nan')):6.1f} s  {res.get('error', '')}", flush=True)
    results: list[dict] = []
    smoke_done: dict[str, dict] = {}
    for label, cfg in configs.items():
        if args.budget_s and time.perf_counter() - start > args.budget_s:
            res = {"label": label, "size": cfg.size, "batch": cfg.batch, "error": "skipped: --budget_s spent"}
        elif args.smoke and program_key(cfg) + cfg.feed in smoke_done:  # the same tiny run: not run twice
            same = smoke_done[program_key(cfg) + cfg.feed]
            res = {**same, "label": label, "smoke_same_as": same["label"]}
        else:
            res = run_timed(label, cfg, args)
            smoke_done.setdefault(program_key(cfg) + cfg.feed, res)
        if args.smoke and cfg.overrides != CONFIGS[label].overrides:
            res["smoke_substituted"] = {"attention": [CONFIGS[label].overrides.get("attention"), "fused"]}
        if "tokens_per_s" in res:
            add_rates(res, peak_spec, mm)
        results.append(res)
        print(json.dumps(res), flush=True)
    print(table(results), flush=True)
    measured = [r for r in results if "achieved_tflops" in r]
    # The best is base's (the headline size) where base ran; large's TFLOP/s are not comparable to it.
    base = [r for r in measured if r["size"] == "base"] or measured
    best = max(base, key=lambda r: r["achieved_tflops"], default=None)
    prof = {}
    if args.profile_best and best is not None:
        prof = profile(best["label"], configs[best["label"]], args)
        print("profile of", best["label"], "by model part:", prof.get("by_group", prof.get("error")), flush=True)
    return harness.finish(
        "gpu_mfu",
        args.json,
        gpu=name,
        datasheet_bf16_flops=peak_spec,
        matmul=mm,
        seq=args.seq,
        dtype=args.dtype,
        smoke=args.smoke,
        precompile=compiled,
        results=results,
        best=best["label"] if best else None,
        profile=prof,
        wall_s=time.perf_counter() - start,
    )


if __name__ == "__main__":
    main()
