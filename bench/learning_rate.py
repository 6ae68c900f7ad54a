"""Chooses a size's learning rate on training loss alone: short baseline runs at each candidate, same data.

    python -m bench.learning_rate --size=mini --rates=1e-3,5e-4,2e-4 --steps=300 --warmup=30

Each candidate trains the baseline (no pool) with the experiment's data overrides (``science.EXPERIMENT``) and
the size's model overrides for ``--steps`` steps at seed 0, linear warm-up then linear decay to 0 at the
probe's end, and is scored by its mean training loss over the last quarter of the logged steps. No eval text
is read, so the choice cannot be tuned to any reported figure. The probe is shorter than the run it serves;
a rate that has not left the unigram plateau (~7.2 nats on the sample) within it is out either way.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence

import numpy as np

from bench import science
from bench.harness import REPO, machine_info

SIZES = {"tiny": (), "mini": science.MINI, "small": science.SMALL}


def probe_args(size: str, rate: float, steps: int, warmup: int) -> list[str]:
    """The overrides of one probe run: the experiment's data, the size, one checkpoint, the candidate rate."""
    return [
        *science.EXPERIMENT,
        *SIZES[size],
        *science.step_args(steps, 1),
        "--config.train.log_every=20",
        "--config.train.seed=0",
        f"--config.train.learning_rate={rate}",
        f"--config.train.warmup_steps={warmup}",
    ]


def tail_loss(metrics_path: str, fraction: float = 0.25) -> tuple[float, list[tuple[int, float]]]:
    """Mean training loss over the last ``fraction`` of the logged steps, and the whole logged curve."""
    curve = []
    with open(metrics_path) as f:
        for line in f:
            row = json.loads(line)
            if "loss" in row and "step" in row:
                curve.append((int(row["step"]), float(row["loss"])))
    if not curve:
        raise SystemExit(f"bench.learning_rate: no training loss logged in {metrics_path}")
    last = curve[-max(1, int(round(len(curve) * fraction))) :]
    return float(np.mean([loss for _, loss in last])), curve


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="mini", choices=sorted(SIZES))
    parser.add_argument("--rates", default="1e-3,5e-4,2e-4", help="candidate peak learning rates, comma-separated")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--out", default=os.path.join(REPO, "workdirs", "learning_rate"))
    parser.add_argument("--json", default=None, help="where the scores go (default: OUT/SIZE.json)")
    args = parser.parse_args(argv)
    try:
        rates = [float(r) for r in args.rates.split(",") if r.strip()]
    except ValueError:
        raise SystemExit(
            f"bench.learning_rate: --rates={args.rates!r} is not a comma-separated list of numbers"
        ) from None
    if not rates or min(rates) <= 0:
        raise SystemExit(f"bench.learning_rate: --rates={args.rates!r} needs positive rates")
    if not 0 <= args.warmup < args.steps:
        raise SystemExit(f"bench.learning_rate: --warmup={args.warmup} must lie in [0, --steps={args.steps})")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(args.out, "jax_cache"))
    env.setdefault("XDG_CACHE_HOME", os.path.join(args.out, "cache"))  # prepared shards stay in the probe's folder
    scores = []
    for rate in rates:
        workdir = os.path.join(args.out, f"{args.size}_lr{rate:g}")
        began = time.perf_counter()
        cmd = [sys.executable, "-m", "xlmp_jax.train", "--config=configs/tiny_baseline.py", f"--workdir={workdir}"]
        reused = os.path.exists(os.path.join(workdir, "checkpoints", str(args.steps)))
        if not reused:
            proc = subprocess.run(cmd + probe_args(args.size, rate, args.steps, args.warmup), cwd=REPO, env=env,
                                  capture_output=True, text=True)  # fmt: skip
            if proc.returncode != 0:
                raise SystemExit(f"bench.learning_rate: lr {rate:g} failed:\n{proc.stderr[-3000:]}")
        loss, curve = tail_loss(os.path.join(workdir, "metrics.jsonl"))
        seconds = None if reused else round(time.perf_counter() - began)
        scores.append(dict(rate=rate, tail_loss=loss, curve=curve, seconds=seconds))
        took = "trained before" if reused else f"{seconds} s"
        print(f"bench.learning_rate: {args.size} lr {rate:g}: tail training loss {loss:.3f} ({took})", flush=True)
    best = min(scores, key=lambda s: s["tail_loss"])
    print(f"bench.learning_rate: {args.size}: lowest tail training loss at lr {best['rate']:g} "
          f"({best['tail_loss']:.3f})")  # fmt: skip
    out = args.json or os.path.join(args.out, f"{args.size}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(dict(size=args.size, steps=args.steps, warmup=args.warmup, chosen=best["rate"], scores=scores,
                       command=" ".join(["python -m bench.learning_rate", *(argv or sys.argv[1:])]),
                       machine=machine_info()), f, indent=1)  # fmt: skip
    print(f"bench.learning_rate: wrote {out}")


if __name__ == "__main__":
    main()
