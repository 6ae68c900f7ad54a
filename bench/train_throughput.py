"""Training throughput: xlmp vs transformers' PyTorch XLMRobertaForMaskedLM, in one run of one command.

Variants (each in its own subprocess, one after the other, same batch/sequence/masking/AdamW/fp32):
  torch          transformers as users run it: labels -100 off the masked positions, logits everywhere
  xlmp           XLM-P (default pool), LM head at the K gathered masked positions (the project's step)
  xlmp_nopool    the same without the pool (XLM-R architecture) -> the pool's cost
  xlmp_dense     no pool, logits at every position -> equal algorithm vs torch; vs xlmp_nopool: sparse head

Prints per-variant tokens/s (min/median/max over timed steps after warm-up), ratios to torch, CPU/GPU
MFU against the matmul peak measured in the same run, peak host memory, and one ``RESULT {json}`` line.

  python bench/train_throughput.py --sizes=small,base              # the published CPU run
  python bench/train_throughput.py --smoke                         # one tiny step of every variant
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import harness  # noqa: E402

VARIANTS = {
    "torch": dict(framework="torch", pool=False, dense=True),
    "xlmp": dict(framework="xlmp", pool=True, dense=False),
    "xlmp_nopool": dict(framework="xlmp", pool=False, dense=False),
    "xlmp_dense": dict(framework="xlmp", pool=False, dense=True),
    "xlmp_pool_dense": dict(framework="xlmp", pool=True, dense=True),
}
DEFAULT_VARIANTS = "torch,xlmp,xlmp_nopool,xlmp_dense"


def measure(
    variant: str,
    size: str,
    batch: int,
    seq: int,
    warmup: int,
    steps: int,
    dtype: str = "float32",
    overrides: dict | None = None,
    feed: str = "device",
) -> dict:
    """Runs one variant in this process and returns its measurements.

    ``overrides`` are ModelConfig fields (e.g. ``{"remat": "full", "attention_dropout": 0.0}``); ``feed``
    where each step's batch comes from (``harness.make_xlmp_step``; xlmp variants only).
    """
    spec = VARIANTS[variant]
    model_cfg = harness.model_config(size, pool=spec["pool"], dtype=dtype, **(overrides or {}))
    rss0 = harness.current_rss_mib()
    t_build = time.perf_counter()
    cost = None
    if spec["framework"] == "torch":
        step, info = harness.make_torch_step(model_cfg, batch_size=batch, seq_length=seq)
    else:
        step, cost = harness.make_xlmp_step(
            model_cfg, batch_size=batch, seq_length=seq, dense_head=spec["dense"], feed=feed
        )
        info = {"step_impl": "project", "feed": feed}
    build_s = time.perf_counter() - t_build
    times, first = harness.time_steps(step, warmup, steps)
    k = seq if spec["dense"] else harness.max_predictions(seq, harness.MLM_RATE)
    fpt, flops_source = harness.flops_per_token(model_cfg, seq, k)
    tokens = batch * seq
    result = {
        "variant": variant,
        "size": size,
        "batch": batch,
        "seq": seq,
        "dtype": dtype,
        "head_positions": k,
        "step_s": harness.stats(times),
        "tokens_per_s": harness.stats([tokens / t for t in times]),
        "first_step_s": first,
        "build_s": build_s,
        "flops_per_token": fpt,
        "flops_source": flops_source,
        "rss_before_mib": rss0,
        "peak_rss_mib": harness.peak_rss_mib(),
        **info,
    }
    if overrides:
        result["overrides"] = overrides
    if spec["framework"] == "xlmp":
        result.update(harness.device_memory(model_cfg, batch_size=batch, seq_length=seq, dense_head=spec["dense"]))
    if cost is not None:
        analysis = cost()
        result.update({k: v for k, v in analysis.items() if k.startswith("compiled_") or k == "compile_s"})
        if os.environ.get("BENCH_COST", "0") == "1":
            result["xla_cost"] = analysis
    return result


def compile_only(variant: str, size: str, batch: int, seq: int, dtype: str, overrides: dict | None) -> dict:
    """Compiles one xlmp variant's step without running it (``harness.compile_xlmp_step``): fills the
    persistent compilation cache for a later timed run of the same variant."""
    spec = VARIANTS[variant]
    model_cfg = harness.model_config(size, pool=spec["pool"], dtype=dtype, **(overrides or {}))
    return harness.compile_xlmp_step(model_cfg, batch_size=batch, seq_length=seq, dense_head=spec["dense"])


def _fmt(x: float) -> str:
    return f"{x:,.1f}" if x >= 10 else f"{x:.2f}"


def report(results: list[dict], peak: dict) -> str:
    """A plain-text table: absolute numbers, ratios to torch, MFU against the measured matmul peak."""
    lines = [
        f"matmul peak ({peak['n']}x{peak['n']} {peak['dtype']}, XLA): median {peak['median']:.1f} GFLOP/s "
        f"(min {peak['min']:.1f}, max {peak['max']:.1f})",
        f"{'size':6} {'variant':16} {'tok/s med':>10} {'(min..max)':>20} {'x torch':>8} {'GFLOP/tok':>9} "
        f"{'MFU':>6} {'peak RSS MiB':>12} {'impl':>8}",
    ]
    by_size: dict[str, dict[str, dict]] = {}
    for r in results:
        by_size.setdefault(r["size"], {})[r["variant"]] = r
    for size, rows in by_size.items():
        ref = rows.get("torch", {}).get("tokens_per_s", {}).get("median")
        for name, r in rows.items():
            if "error" in r:
                lines.append(f"{size:6} {name:16} ERROR {r['error']}")
                continue
            tps = r["tokens_per_s"]
            ratio = f"{tps['median'] / ref:.2f}x" if ref else "-"
            mfu = tps["median"] * r["flops_per_token"] / (peak["median"] * 1e9)
            lines.append(
                f"{size:6} {name:16} {_fmt(tps['median']):>10} {_fmt(tps['min']) + '..' + _fmt(tps['max']):>20} "
                f"{ratio:>8} {r['flops_per_token'] / 1e9:9.3f} {mfu:6.1%} {r['peak_rss_mib']:12.0f} "
                f"{r.get('step_impl', 'torch'):>8}"
            )
        derived = derived_ratios(rows)
        for key, value in derived.items():
            lines.append(f"{size:6} {key}: {value:.3f}")
    return "\n".join(lines)


def derived_ratios(rows: dict[str, dict]) -> dict[str, float]:
    """The issue's headline ratios from one size's rows (missing variants are skipped)."""
    med = {k: r["tokens_per_s"]["median"] for k, r in rows.items() if "tokens_per_s" in r}
    step = {k: r["step_s"]["median"] for k, r in rows.items() if "step_s" in r}
    out = {}
    if "torch" in med:
        for name, label in (
            ("xlmp", "ratio_as_users_run_it"),
            ("xlmp_nopool", "ratio_nopool_sparse"),
            ("xlmp_dense", "ratio_equal_algorithm"),
        ):
            if name in med:
                out[label] = med[name] / med["torch"]
    if "xlmp" in step and "xlmp_nopool" in step:
        out["pool_step_overhead"] = step["xlmp"] / step["xlmp_nopool"] - 1.0
    if "xlmp_dense" in step and "xlmp_nopool" in step:
        out["sparse_head_speedup"] = step["xlmp_dense"] / step["xlmp_nopool"]
    return out


def run_round(args: argparse.Namespace, sizes: list[str], variants: list[str]) -> dict:
    """One pass over every size x variant (each in a fresh worker process), with the matmul peaks.

    Several rounds (``--rounds``) interleave the frameworks in time, so a machine whose speed drifts
    (a shared VM) shows up as spread between rounds instead of biasing one side of a ratio.
    """
    n, repeats = (256, 2) if args.smoke else (2048, 10)
    peak = harness.matmul_peak_gflops(n=n, repeats=repeats)
    torch_peak = harness.torch_matmul_peak_gflops(n=n, repeats=repeats) if "torch" in variants else None
    results = []
    for size in sizes:
        for variant in variants:
            if args.smoke:
                res = measure(variant, size, args.batch, args.seq, args.warmup, args.steps, args.dtype)
            else:
                res = harness.run_worker(
                    [
                        os.path.abspath(__file__),
                        f"--worker={variant}",
                        f"--sizes={size}",
                        f"--batch={args.batch}",
                        f"--seq={args.seq}",
                        f"--warmup={args.warmup}",
                        f"--steps={args.steps}",
                        f"--dtype={args.dtype}",
                    ]
                )
                res.setdefault("variant", variant)
                res.setdefault("size", size)
            results.append(res)
            print(json.dumps(res), flush=True)
    return {
        "matmul_peak_gflops": peak,
        "torch_matmul_peak_gflops": torch_peak,
        "results": results,
        "derived": {
            size: derived_ratios({r["variant"]: r for r in results if r.get("size") == size}) for size in sizes
        },
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="small,base", help="comma list of tiny/small/base/large")
    p.add_argument("--variants", default=DEFAULT_VARIANTS)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--rounds", type=int, default=1, help="repeat the whole variant list (interleaves in time)")
    p.add_argument("--overrides", default="", help='ModelConfig fields as JSON, e.g. {"remat": "full"}')
    p.add_argument("--json", default="", help="also write all results to this file")
    p.add_argument("--smoke", action="store_true", help="one tiny step of each variant, in-process")
    p.add_argument("--worker", default="", help=argparse.SUPPRESS)
    p.add_argument("--feed", default="device", help=argparse.SUPPRESS)  # worker: harness.FEEDS
    p.add_argument("--compile_only", action="store_true", help=argparse.SUPPRESS)  # worker: fill the cache
    p.add_argument("--cache_dir", default="", help=argparse.SUPPRESS)  # worker: JAX's persistent cache
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error(f"--rounds={args.rounds} must be at least 1")

    if args.smoke:
        args.sizes, args.batch, args.seq, args.warmup, args.steps = "tiny", 2, 16, 1, 1
    if args.worker:  # child process: one variant, one size
        from xlmp_jax.runtime import compile_cache

        overrides = json.loads(args.overrides) if args.overrides else None
        if args.cache_dir:
            compile_cache.enable(args.cache_dir, environ={})
        if args.compile_only:
            harness.emit(compile_only(args.worker, args.sizes, args.batch, args.seq, args.dtype, overrides))
            return {}
        before = compile_cache.COUNTER.snapshot() if args.cache_dir else None
        result = measure(
            args.worker,
            args.sizes,
            args.batch,
            args.seq,
            args.warmup,
            args.steps,
            args.dtype,
            overrides,
            args.feed,
        )
        if before is not None:
            requests, hits = (now - then for now, then in zip(compile_cache.COUNTER.snapshot(), before, strict=True))
            result["cache"] = {"requests": requests, "hits": hits}
        harness.emit(result)
        return {}

    sizes, variants = args.sizes.split(","), args.variants.split(",")
    rounds = []
    for index in range(1 if args.smoke else args.rounds):
        rounds.append(run_round(args, sizes, variants))
        print(f"--- round {index + 1} of {args.rounds}", flush=True)
        print(report(rounds[-1]["results"], rounds[-1]["matmul_peak_gflops"]), flush=True)
        if rounds[-1]["torch_matmul_peak_gflops"]:
            print(f"torch matmul (fp32): median {rounds[-1]['torch_matmul_peak_gflops']['median']:.1f} GFLOP/s")
    summary = harness.finish(
        "train_throughput",
        args.json,
        **rounds[0],
        rounds=rounds[1:],
        derived_median_over_rounds={
            size: {
                key: statistics.median(r["derived"][size][key] for r in rounds if key in r["derived"][size])
                for key in rounds[0]["derived"][size]
            }
            for size in sizes
        },
    )
    if len(rounds) > 1:
        print(f"median over {len(rounds)} rounds: {json.dumps(summary['derived_median_over_rounds'])}")
    return summary


if __name__ == "__main__":
    main()
