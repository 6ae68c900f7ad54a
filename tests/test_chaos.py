"""Chaos resume: a tiny run killed at named points (inside a save, inside an eval, between a step and its metrics),
restarted each time, ends bit-identical to an uninterrupted run (xlmp_jax/runtime/faults.py points, xlmp_jax/training/trainer.py)."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from helpers import REPO

from xlmp_jax import train as train_lib
from xlmp_jax.training import checkpoint_read, goodput

# 1 layer, 8 prompts, 3 languages, 8 rows of 32 tokens; every step logged, a checkpoint every 2 steps, an eval
# (one batch) at steps 4 and 8, every checkpoint kept so that each one can be checked.
ARGS = [
    "--config=configs/tiny.py",
    "--config.model.num_layers=1",
    "--config.model.pool.size=8",
    "--config.data.seq_length=32",
    "--config.data.shuffle_buffer=64",
    "--config.data.languages=('en','de','fr')",
    "--config.train.batch_size=8",
    "--config.train.steps=8",
    "--config.train.warmup_steps=2",
    "--config.train.log_every=1",
    "--config.train.checkpoint_every=2",
    "--config.train.keep_checkpoints=10",
    "--config.train.eval_every=4",
    "--config.train.eval_batches=1",
    "--config.train.eval_batch_size=8",
    "--config.train.pool_report=False",
]


WALL: dict[str, list[float]] = {}  # work directory -> each run's wall time, measured outside the process


def _run(workdir, cache, faults: str = "") -> tuple[int, str, str]:
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS="",
        XLMP_NUM_CPU_DEVICES="1",
        TF_CPP_MIN_LOG_LEVEL="2",
        JAX_COMPILATION_CACHE_DIR=cache,
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
        PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        XLMP_FAULTS=faults,
    )
    cmd = [sys.executable, "-m", "xlmp_jax.train", *ARGS, f"--workdir={workdir}"]
    began = time.time()
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    WALL.setdefault(str(workdir), []).append(time.time() - began)
    return proc.returncode, proc.stdout, proc.stderr


def _records(workdir, key: str) -> dict[int, float]:
    """step -> logged ``key`` from metrics.jsonl; a step logged twice is a failure."""
    values = {}
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            record = json.loads(line)
            if key in record:
                assert record["step"] not in values, f"{key} of step {record['step']} logged twice"
                values[record["step"]] = record[key]
    return values


def _uncommitted(workdir) -> list[str]:
    """Step directories of saves that never committed (Orbax writes into ``<step>.orbax-checkpoint-tmp-*``)."""
    directory = os.path.join(workdir, "checkpoints")
    return sorted(n for n in os.listdir(directory) if not n.isdigit() and not n.startswith("."))


@pytest.mark.slow
def test_kills_at_five_points_then_resume_is_bit_identical(tmp_path):
    cache = str(tmp_path / "jax_cache")
    straight, chaos = tmp_path / "straight", tmp_path / "chaos"
    rc, out, err = _run(straight, cache)
    assert rc == 0, out[-2000:] + err[-3000:]

    # (fault, the committed checkpoint it must leave as the latest); each run resumes from the one before.
    kills = [
        ("sigkill@after_step:3", 2),  # a step taken, its metrics not yet written
        ("sigkill@in_save:4", 2),  # inside the save of step 4: written in part, not committed
        ("sigkill@in_eval:4", 2),  # inside the eval of step 4, after its first batch
        ("sigkill@after_commit:4", 4),  # step 4's save committed, nothing after it done
        ("sigkill@after_log:6", 4),  # step 6 logged, its checkpoint not started
    ]
    half, moved = [], None
    for i, (fault, latest) in enumerate(kills):
        rc, out, err = _run(chaos, cache, fault)
        assert rc == -signal.SIGKILL, (fault, out[-2000:] + err[-3000:])
        assert checkpoint_read.latest_step(str(chaos)) == latest, (fault, checkpoint_read.all_steps(str(chaos)))
        if i:
            assert f"resumed from {chaos / 'checkpoints' / str(kills[i - 1][1])}" in out, (fault, out[-2000:])
        if half:  # the run after the one killed inside a save: the half-written save was moved aside, with a warning
            moved = sorted(os.listdir(chaos / "checkpoints_corrupt"))
            assert moved == half and not _uncommitted(chaos), (moved, half)
            assert f"the save of checkpoint step 4 never committed (the run stopped during it): {chaos}" in err
            half = []
        if fault.startswith("sigkill@in_save"):
            half = _uncommitted(chaos)
            assert half and all(n.startswith("4.") for n in half), os.listdir(chaos / "checkpoints")
            assert 4 not in checkpoint_read.all_steps(str(chaos))  # never chosen for restore

    # SIGTERM inside a save: the save completes, the run takes one more step, saves it and exits 143.
    rc, out, err = _run(chaos, cache, "sigterm@in_save:6")
    assert rc == train_lib.PREEMPTED_EXIT, out[-2000:] + err[-3000:]
    assert f"SIGTERM: saved checkpoint {chaos / 'checkpoints' / '7'}" in out
    assert {4, 6, 7} <= set(checkpoint_read.all_steps(str(chaos)))

    rc, out, err = _run(chaos, cache)
    assert rc == 0, out[-2000:] + err[-3000:]
    assert f"resumed from {chaos / 'checkpoints' / '7'}" in out

    assert moved and sorted(os.listdir(chaos / "checkpoints_corrupt")) == moved  # kept to the end: never deleted
    assert sorted(_records(straight, "loss")) == list(range(1, 9))
    assert _records(chaos, "loss") == _records(straight, "loss")  # each step logged once, bit-identical
    assert _records(chaos, "eval/loss") == _records(straight, "eval/loss") and len(_records(straight, "eval/loss")) == 2
    _, a, step_a = checkpoint_read.load_params(str(straight))
    _, b, step_b = checkpoint_read.load_params(str(chaos))
    assert step_a == step_b == 8
    leaves_a, leaves_b = jax.tree_util.tree_flatten_with_path(a)[0], jax.tree_util.tree_flatten_with_path(b)[0]
    assert [p for p, _ in leaves_a] == [p for p, _ in leaves_b]
    for (path, x), (_, y) in zip(leaves_a, leaves_b, strict=True):
        np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))

    # Goodput: every attempt's categories add up to the wall time measured outside its process, less what a kill
    # or the interpreter's exit leaves after the last record; the steps redone after a restore are badput.
    for workdir, attempts in ((straight, 1), (chaos, len(kills) + 2)):
        records = goodput.read_records(str(workdir))
        summary = goodput.summarize(records)
        outside = sum(WALL[str(workdir)])
        assert summary["attempts"] == attempts, (workdir, summary)
        assert outside - GOODPUT_TOLERANCE_S * attempts <= summary["total_s"] <= outside, (outside, summary)
    chaos_seconds = goodput.summarize(goodput.read_records(str(chaos)))["seconds"]
    assert chaos_seconds["redone_steps"] > 0 and "redone_steps" not in summary_of(straight)["seconds"]


# Per attempt: the time after its last goodput record (up to one logged step before a SIGKILL) and the
# interpreter's exit after the final record (closing Orbax and TensorFlow: up to ~4 s on a loaded 2-core
# machine), which no account inside the process can see.
GOODPUT_TOLERANCE_S = 6.0


def summary_of(workdir) -> dict:
    return goodput.summarize(goodput.read_records(str(workdir)))
