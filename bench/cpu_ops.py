"""Single XLA ops behind the CPU step's profile, timed in isolation (BENCHMARKS.md sections 1 and 6).

  head matmuls   the three 250k-vocabulary head matmuls of a base step with logits everywhere
                 (forward, d hidden, d table), N = 1024 rows
  bias gradient  the sum of a [1024, 250002] gradient over its rows: as XLA's reduction (``g.sum(0)``)
                 and as the matrix-vector product ``ones @ g`` (what ``layers.add_bias`` uses)
  dropout bits   40.5M keep/drop draws (a base step's count): ``jax.random.bernoulli`` (32-bit
                 uniforms, flax's Dropout) vs two 16-bit draws per 32-bit word (``layers.Dropout``)

XLA CPU flags are compared by rerunning with ``XLA_FLAGS``, e.g.
``XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=-reduce python bench/cpu_ops.py``.

  python bench/cpu_ops.py            # the published figures
  python bench/cpu_ops.py --smoke    # small shapes, one repeat
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import harness  # noqa: E402


def best_seconds(fn: Callable, args: tuple, repeats: int) -> float:
    """Fastest of ``repeats`` blocking calls after one compile-and-run call."""
    import jax

    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1024, help="N: head rows (B x T)")
    p.add_argument("--vocab", type=int, default=250002)
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--draws", type=int, default=40_500_000, help="dropout draws")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", default="")
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args(argv)
    if args.smoke:
        args.rows, args.vocab, args.hidden, args.draws, args.repeats = 16, 1000, 32, 10_000, 1
    import jax
    import jax.numpy as jnp

    n, v, d = args.rows, args.vocab, args.hidden
    key = jax.random.key(0)
    h = jax.random.normal(key, (n, d))
    table = jax.random.normal(jax.random.fold_in(key, 1), (v, d))
    g = jax.random.normal(jax.random.fold_in(key, 2), (n, v))
    matmul_flops = 2.0 * n * d * v
    ops = {
        "head forward h @ table.T": (jax.jit(lambda h, t: jnp.einsum("nd,vd->nv", h, t)), (h, table), matmul_flops),
        "head d_hidden g @ table": (jax.jit(lambda g, t: g @ t), (g, table), matmul_flops),
        "head d_table g.T @ h": (jax.jit(lambda g, h: jnp.einsum("nv,nd->vd", g, h)), (g, h), matmul_flops),
        "bias grad g.sum(0)": (jax.jit(lambda g: g.sum(0)), (g,), 0.0),
        "bias grad ones @ g": (jax.jit(lambda g: jnp.ones((g.shape[0],), g.dtype) @ g), (g,), 0.0),
    }
    half = args.draws // 2

    def bits16(k):
        words = jax.random.bits(k, (half,), jnp.uint32)
        return jax.lax.bitcast_convert_type(words, jnp.uint16).reshape(-1) >= 6554

    ops["dropout bernoulli (32-bit)"] = (jax.jit(lambda k: jax.random.bernoulli(k, 0.9, (args.draws,))), (key,), 0.0)
    ops["dropout 16-bit draws"] = (jax.jit(bits16), (key,), 0.0)
    rows = []
    for name, (fn, fn_args, flops) in ops.items():
        seconds = best_seconds(fn, fn_args, args.repeats)
        rate = flops / seconds / 1e9 if flops else None
        rows.append({"op": name, "seconds": seconds, "gflops": rate})
        print(f"  {name:28} {seconds * 1e3:9.1f} ms" + (f"  {rate:6.1f} GFLOP/s" if rate else ""), flush=True)
    return harness.finish(
        "cpu_ops",
        args.json,
        xla_flags=os.environ.get("XLA_FLAGS", ""),
        rows=n,
        vocab=v,
        hidden=d,
        draws=args.draws,
        results=rows,
    )


if __name__ == "__main__":
    main()
