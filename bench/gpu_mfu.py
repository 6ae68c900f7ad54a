"""GPU throughput, MFU and device memory of the project's train step (base config, bf16, seq 512).

Each configuration runs in its own subprocess (``bench/train_throughput.py --worker``), so its
``memory_stats()['peak_bytes_in_use']`` is its own; the parent never initialises the GPU. MFU is
reported against the card's dense bf16 datasheet peak (looked up from ``nvidia-smi``'s name) and
against the bf16 matmul rate measured in the same run. A configuration that runs out of memory is
reported as ``OOM`` (that is how the largest batch is found).

  python bench/gpu_mfu.py                           # the published H100 run (see BENCHMARKS.md)
  python bench/gpu_mfu.py --configs=b32,b32_fused   # a subset
  python bench/gpu_mfu.py --smoke                   # CPU, tiny model, one step (tests/test_bench.py)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import common  # noqa: E402

# Dense bf16 tensor-core peaks from NVIDIA's datasheets (FLOP/s, no sparsity).
DATASHEET_BF16 = {
    "H100 80GB HBM3": 989.4e12,  # SXM5
    "H100 SXM": 989.4e12,
    "H100 NVL": 835e12,
    "H100 PCIe": 756e12,
    "H200": 989.4e12,
    "A100": 312e12,
}

# name -> (variant, batch, ModelConfig overrides, extra environment)
CUDNN = {"attention": "cudnn", "attention_dropout": 0.0}
RBG = {"JAX_DEFAULT_PRNG_IMPL": "rbg"}  # tuning experiment: cheaper dropout bits than threefry
CONFIGS: dict[str, tuple[str, int, dict, dict]] = {
    "b32": ("xlmp", 32, {}, {}),
    "b32_rbg": ("xlmp", 32, {}, RBG),
    "b32_fused": ("xlmp", 32, {"attention_dropout": 0.0}, {}),
    "b32_fused_rbg": ("xlmp", 32, {"attention_dropout": 0.0}, RBG),
    "b32_nopool": ("xlmp_nopool", 32, {}, {}),
    "b32_nopool_fused": ("xlmp_nopool", 32, {"attention_dropout": 0.0}, {}),
    "b32_dense": ("xlmp_dense", 32, {}, {}),
    "b64": ("xlmp", 64, {}, {}),
    "b64_fused": ("xlmp", 64, {"attention_dropout": 0.0}, {}),
    "b64_fused_rbg": ("xlmp", 64, {"attention_dropout": 0.0}, RBG),
    "b128_fused": ("xlmp", 128, {"attention_dropout": 0.0}, {}),
    "b128_fused_remat": ("xlmp", 128, {"attention_dropout": 0.0, "remat": "full"}, {}),
    "b128_fused_dots": ("xlmp", 128, {"attention_dropout": 0.0, "remat": "dots"}, {}),
    # cuDNN fused attention (model.attention="cudnn"; it has no attention dropout, see BENCHMARKS.md)
    "b32_cudnn": ("xlmp", 32, CUDNN, {}),
    "b64_cudnn": ("xlmp", 64, CUDNN, {}),
    "b128_cudnn": ("xlmp", 128, CUDNN, {}),
    "b256_cudnn": ("xlmp", 256, CUDNN, {}),
    "b128_cudnn_remat": ("xlmp", 128, {**CUDNN, "remat": "full"}, {}),
}
DEFAULT_CONFIGS = "b32,b32_fused,b32_nopool,b32_dense,b64_fused,b128_fused"


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
    common.emit(common.matmul_peak_gflops(n=n, repeats=20, dtype=dtype))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default=DEFAULT_CONFIGS, help=f"comma list of {', '.join(CONFIGS)}")
    p.add_argument("--size", default="base")
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--matmul_n", type=int, default=8192)
    p.add_argument("--timeout", type=float, default=300, help="seconds per configuration")
    p.add_argument("--json", default="")
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--matmul_worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.smoke:
        args.configs, args.size, args.seq, args.warmup, args.steps, args.matmul_n = "b32", "tiny", 16, 1, 1, 256
    if args.matmul_worker:
        matmul_worker(args.matmul_n, args.dtype)
        return {}

    name = gpu_name()
    peak_spec = datasheet_peak(name)
    here = os.path.abspath(__file__)
    mm = common.run_worker([here, "--matmul_worker", f"--matmul_n={args.matmul_n}", f"--dtype={args.dtype}"])
    print("gpu:", name or "(none)", "| datasheet bf16 peak:", peak_spec / 1e12, "TFLOP/s | measured matmul:", mm)
    throughput = os.path.join(os.path.dirname(here), "train_throughput.py")
    results = []
    for label in args.configs.split(","):
        variant, batch, overrides, extra_env = CONFIGS[label]
        if args.smoke:
            batch = 2
        worker = [
            throughput,
            f"--worker={variant}",
            f"--sizes={args.size}",
            f"--batch={batch}",
            f"--seq={args.seq}",
            f"--warmup={args.warmup}",
            f"--steps={args.steps}",
            f"--dtype={args.dtype}",
            f"--overrides={json.dumps(overrides)}",
        ]
        try:
            res = common.run_worker(
                worker, env={"XLA_PYTHON_CLIENT_MEM_FRACTION": "0.95", **extra_env}, timeout=args.timeout
            )
        except subprocess.TimeoutExpired:
            res = {"error": f"timeout after {args.timeout} s"}
        if "error" in res and "RESOURCE_EXHAUSTED" in res.get("log_tail", "") + res.get("error", ""):
            res["error"] = "OOM"
            res.pop("log_tail", None)
        res.update(label=label, batch=batch, overrides=overrides, env=extra_env)
        results.append(res)
        print(json.dumps(res), flush=True)

    lines = [
        f"{'config':18} {'batch':>5} {'tok/s med':>11} {'step ms':>8} {'TFLOP/s':>8} {'MFU(spec)':>9} "
        f"{'MFU(mm)':>8} {'peak GiB':>8} {'plan GiB':>8} {'plan err':>8} {'impl':>8}"
    ]
    for r in results:
        if "tokens_per_s" not in r:
            lines.append(f"{r['label']:18} {r['batch']:5} {r.get('error', '?')[:60]}")
            continue
        tps = r["tokens_per_s"]["median"]
        achieved = tps * r["flops_per_token"]
        r["achieved_tflops"] = achieved / 1e12
        r["mfu_datasheet"] = achieved / peak_spec if peak_spec else None
        r["mfu_measured_matmul"] = achieved / (mm["median"] * 1e9) if "median" in mm else None
        peak_gib = r.get("device_peak_bytes", 0) / 2**30
        plan_gib = r.get("plan_bytes", 0) / 2**30
        err = (plan_gib - peak_gib) / peak_gib if peak_gib else float("nan")
        r["plan_error"] = err
        mfu_spec = f"{r['mfu_datasheet']:.1%}" if r["mfu_datasheet"] else "-"
        mfu_mm = f"{r['mfu_measured_matmul']:.1%}" if r["mfu_measured_matmul"] else "-"
        lines.append(
            f"{r['label']:18} {r['batch']:5} {tps:11,.0f} {r['step_s']['median'] * 1e3:8.1f} "
            f"{achieved / 1e12:8.1f} {mfu_spec:>9} {mfu_mm:>8} {peak_gib:8.2f} {plan_gib:8.2f} {err:8.1%} "
            f"{r.get('step_impl', '?'):>8}"
        )
    print("\n".join(lines))
    summary = common.finish(
        "gpu_mfu",
        args.json,
        gpu=name,
        datasheet_bf16_flops=peak_spec,
        matmul=mm,
        size=args.size,
        seq=args.seq,
        dtype=args.dtype,
        results=results,
    )
    return summary


if __name__ == "__main__":
    main()
