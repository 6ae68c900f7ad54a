"""Before/after of the train-step tunings, interleaved in one process so machine drift hits both arms.

Each arm is the project's train step (``xlmp_jax.training.steps``) built with some of the tunings undone by
patching the module functions they live in, then compiled; the timed steps alternate between arms
(A B A B ...). Tunings that can be undone (all measured on CPU, see BENCHMARKS.md section 6):

  bias_gemv     ``layers.add_bias``: the head bias's gradient as ``ones @ g`` (undone: plain ``x + b``,
                whose gradient XLA:CPU lowers to a slow YNNPACK reduction over [B, K, V])
  max_accuracy  ``losses.mlm_loss``: accuracy as ``target_logit >= max`` (undone: plus an ``argmax``)
  dropout_bits  ``layers.Dropout``: 16 random bits per element (undone: ``flax.linen.Dropout``)

  python bench/tuning_ab.py --variant=xlmp_dense --arms=before,after     # all three undone vs none
  python bench/tuning_ab.py --variant=xlmp --arms=no_dropout_bits,after  # one at a time
  python bench/tuning_ab.py --arms=after@xlmp,after@xlmp_nopool        # ARM@VARIANT: the pool's cost
  python bench/tuning_ab.py --smoke
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import harness  # noqa: E402
from bench.train_throughput import VARIANTS  # noqa: E402

TUNINGS = ("bias_gemv", "max_accuracy", "dropout_bits")
ARMS = {"after": (), "before": TUNINGS, **{f"no_{t}": (t,) for t in TUNINGS}}  # arm -> tunings undone


@contextlib.contextmanager
def undone(tunings: tuple[str, ...]):
    """Temporarily restores the pre-tuning code for ``tunings`` (module attributes read at trace time)."""
    import flax.linen as nn
    import jax.numpy as jnp

    from xlmp_jax.model import layers
    from xlmp_jax.training import losses

    saved = {"add_bias": layers.add_bias, "Dropout": layers.Dropout, "mlm_loss": losses.mlm_loss}
    if "bias_gemv" in tunings:
        layers.add_bias = lambda x, bias: x + bias.astype(x.dtype)
    if "dropout_bits" in tunings:
        layers.Dropout = nn.Dropout
    if "max_accuracy" in tunings:
        tuned = saved["mlm_loss"]

        def mlm_loss_with_argmax(logits, targets, weights, **kwargs):
            out = tuned(logits, targets, weights, **kwargs)
            out["correct"] = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
            return out

        losses.mlm_loss = mlm_loss_with_argmax
    try:
        yield
    finally:
        layers.add_bias, layers.Dropout, losses.mlm_loss = saved["add_bias"], saved["Dropout"], saved["mlm_loss"]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="base")
    p.add_argument("--variant", default="xlmp_dense", choices=tuple(v for v in VARIANTS if v != "torch"))
    p.add_argument("--arms", default="before,after", help=f"comma list of {', '.join(ARMS)}")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--reps", type=int, default=3, help="timed steps per arm (after one warm-up step each)")
    p.add_argument("--json", default="")
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args(argv)
    if args.reps < 1:
        p.error(f"--reps={args.reps} must be at least 1")
    if args.smoke:
        args.size, args.batch, args.seq, args.reps = "tiny", 2, 16, 1
    arms = args.arms.split(",")
    steps, losses = {}, {}
    for arm in arms:
        name, _, variant = arm.partition("@")
        variant = variant or args.variant
        if name not in ARMS or variant not in VARIANTS or variant == "torch":
            raise SystemExit(f"bad arm {arm!r}: ARM[@VARIANT] with ARM one of {', '.join(ARMS)}")
        spec = VARIANTS[variant]
        with undone(ARMS[name]):
            step, _ = harness.make_xlmp_step(
                harness.model_config(args.size, pool=spec["pool"]),
                batch_size=args.batch,
                seq_length=args.seq,
                dense_head=spec["dense"],
            )
        losses[arm] = float(step())  # warm-up; the same data and init in every arm
        steps[arm] = step
    times: dict[str, list[float]] = {arm: [] for arm in arms}
    for _ in range(args.reps):
        for arm in arms:
            t0 = time.perf_counter()
            steps[arm]()
            times[arm].append(time.perf_counter() - t0)
    reference = statistics.median(times[arms[-1]])
    rows = []
    print(
        f"{args.size} (default variant {args.variant}) B={args.batch} T={args.seq}, {args.reps} interleaved steps per arm"
    )
    for arm in arms:
        median = statistics.median(times[arm])
        rows.append(
            {
                "arm": arm,
                "undone": list(ARMS[arm.partition("@")[0]]),
                "step_s": harness.stats(times[arm]),
                "first_loss": losses[arm],
            }
        )
        print(
            f"  {arm:18} median {median:8.3f} s  (min {min(times[arm]):.3f}, max {max(times[arm]):.3f})  "
            f"x{reference / median:.3f} of {arms[-1]}'s speed  first loss {losses[arm]:.5f}"
        )
    summary = harness.finish(
        "tuning_ab",
        args.json,
        size=args.size,
        variant=args.variant,
        batch=args.batch,
        seq=args.seq,
        results=rows,
    )
    return summary


if __name__ == "__main__":
    main()
