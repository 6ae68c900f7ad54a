"""Start-up, resume, input-state size, checkpoint save time and input throughput of the grain training input.

    python -m bench.startup_time                      # everything; writes bench/results/startup.json
    python -m bench.startup_time --skip_runs          # only the in-process figures (throughput, state size, save)

Start-up figures run the real CLI (`python -m xlmp_jax.train --config=configs/tiny.py`, 2 steps, no eval, CPU)
and time the wall clock from launching it to its "first step took" line. "Cold" is an empty prepared-data cache and an
empty JAX compilation cache (a fresh folder each), as on a new machine:
  tiny_cold        the main job's config as shipped (20 languages), cold
  sample114_cold   all 114 sample languages (`--config.data.languages=()`), cold
  sample114_warm   the same with the token and compilation caches of the first run (a new work directory)
  sample114_resume the warm run's work directory again with 4 steps: restores step 2 (weights + input)
  prepared114      all 114 sample languages prepared beforehand (`python -m data_pipelines.prepare`, timed), then
                   trained from `data.prepared_dir` with an eval at step 1 (seconds to its first result)
  synthetic500     500 synthetic languages of small text files (data.source=text), cold
In-process: `TrainData` throughput (tokens/s of one host, every position counted) at seq 512 x batch 8 and
x 2048 (the base run's global batch, as section 7 of BENCHMARKS.md) for 114 and 500 languages, the saved input-state size, and the save time of a tiny-model checkpoint (+ input).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, "bench", "results", "startup.json")
_ENV = {"CUDA_VISIBLE_DEVICES": "", "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "2"}


def _run_train(workdir: str, cache: str, jax_cache: str, overrides: list[str], steps: int, repo: str = REPO) -> dict:
    """Launches the train CLI (prepared-data cache `cache`, JAX compilation cache `jax_cache`); seconds to its "first
    step took" line, its phase summary, its exit code."""
    cmd = [
        sys.executable, "-m", "xlmp_jax.train", "--config=configs/tiny.py", f"--workdir={workdir}",
        f"--config.train.steps={steps}", "--config.train.warmup_steps=1", "--config.train.checkpoint_every=2",
        "--config.train.eval_every=0",
        "--config.train.pool_report=False", "--config.train.log_every=2", f"--config.data.decompress_dir={cache}",
        *overrides,
    ]  # fmt: skip
    env = dict(os.environ, **_ENV, PYTHONPATH=repo + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env["JAX_COMPILATION_CACHE_DIR"] = jax_cache  # wins over the config's default (~/.cache/xlmp/jax)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first, first_eval, phases, tail = None, None, "", []
    for line in proc.stdout:
        tail = (tail + [line.rstrip()])[-20:]
        if "first step took" in line and first is None:
            first = time.perf_counter() - t0
        if "eval/loss" in line and first_eval is None:
            first_eval = time.perf_counter() - t0
        if "start-up took" in line:  # the trainer's phase summary (config, data, init, ..., compile)
            phases = line.strip()
    rc = proc.wait()
    out = {"seconds_to_first_step": round(first, 1) if first else None, "rc": rc, "phases": phases}
    if first_eval:
        out["seconds_to_first_eval_result"] = round(first_eval, 1)
    if rc:
        out["tail"] = tail
    return out


def _synthetic_corpus(root: str, n: int) -> str:
    """`n` languages, 120 lines each, of sample-vocabulary words (small files, as a long tail looks)."""
    os.makedirs(root, exist_ok=True)
    words = "the quick brown fox jumps over a lazy dog while seven cats watch quietly from home".split()
    rng = random.Random(0)
    for i in range(n):
        with open(os.path.join(root, f"x{i:03d}.txt"), "w", encoding="utf-8") as f:
            for j in range(120):
                f.write(" ".join(rng.choices(words, k=rng.randint(4, 40))) + (f" {i} {j}\n"))
                if j % 10 == 9:
                    f.write("\n")
    return root


def _data_config(cache: str, path: str = ""):
    from data_pipelines.config import default_data_config

    cfg = default_data_config()
    cfg.decompress_dir = cache
    if path:
        cfg.source, cfg.path = "text", path
    return cfg


def _throughput(cfg, batch_size: int, seconds: float) -> dict:
    """Steady-state tokens/s of one host's `TrainData` (seq 512): batches after 5 warm-up ones, for `seconds`."""
    from data_pipelines.input_pipeline import make_train_data

    cfg.seq_length = 512
    t0 = time.perf_counter()
    data = make_train_data(cfg, global_batch_size=batch_size, seed=0)
    build = time.perf_counter() - t0
    for _ in range(5):
        next(data)
    t0 = time.perf_counter()
    real = batches = 0
    while time.perf_counter() - t0 < seconds:
        real += int(next(data)["attention_mask"].sum())
        batches += 1
    dt = time.perf_counter() - t0
    tokens = batches * batch_size * 512
    return {
        "languages": len(data.languages),
        "batch": f"{batch_size}x512",
        "build_seconds": round(build, 2),  # prepared cache warm after the CLI runs (cold with --skip_runs, b=8)
        "tokens_per_s": round(tokens / dt),
        "non_pad_share": round(real / tokens, 3),
        "batches": batches,
    }


def _state_and_save(cache: str) -> dict:
    """Input-state size (114 languages) and the save time of a tiny-model checkpoint with it."""
    import jax

    from data_pipelines.input_pipeline import make_train_data
    from xlmp_jax import config_utils
    from xlmp_jax.training import checkpoint, optim, sharding
    from xlmp_jax.training import state as train_state

    run = config_utils.load_run("configs/tiny.py", ["data.languages=()", f"data.decompress_dir={cache}"])
    data = make_train_data(run.data, global_batch_size=run.train.batch_size, seed=0)
    for _ in range(3):
        next(data)
    mesh = sharding.make_mesh(run.mesh, jax.devices()[:1])
    tx = optim.make_optimizer(run.train).tx
    state, _ = train_state.create_train_state(run.model, tx, mesh, jax.random.key(0), rules=run.mesh.logical_rules)
    work = tempfile.mkdtemp(prefix="xlmp_bench_save_")
    try:
        ckpt = checkpoint.Checkpointer(work)
        times = []
        for step in (1, 2, 3):
            t0 = time.perf_counter()
            ckpt.save(step, state, data=data, config=run.resolved)
            ckpt.wait()
            times.append(time.perf_counter() - t0)
        ckpt.close()
        data_dir = os.path.join(work, "checkpoints", "3", "data")
        if not os.path.isdir(data_dir):
            data_dir = next(os.path.join(r, d) for r, ds, _ in os.walk(work) for d in ds if d == "data")
        size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(data_dir) for f in fs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "languages": len(data.languages),
        "data_state_bytes": size,
        "save_seconds": [round(t, 2) for t in times],
        "note": "first save includes Orbax's first-use set-up",
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip_runs", action="store_true", help="only the in-process figures")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of batches timed for throughput")
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[8, 2048], help="per-host batches (x 512)")
    parser.add_argument("--out", default=OUT)
    parser.add_argument(
        "--runs",
        default="tiny_cold,sample114_cold,sample114_warm,sample114_resume,prepared114,synthetic500",
        help="which CLI start-ups to time (comma-separated; the warm and resume runs need sample114_cold)",
    )
    parser.add_argument(
        "--repo",
        default=REPO,
        help="run the CLI start-ups in this checkout (e.g. an older commit, for a before/after); in-process "
        "figures are then skipped",
    )
    args = parser.parse_args(argv)
    if REPO not in sys.path:
        sys.path.insert(0, REPO)
    os.environ.update(_ENV)
    root = tempfile.mkdtemp(prefix="xlmp_bench_startup_")
    syn = _synthetic_corpus(os.path.join(root, "syn500"), 500)
    result: dict = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpus": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    try:
        runs = set(args.runs.split(","))
        if not args.skip_runs:
            all114 = ["--config.data.languages=()"]
            c114, j114 = os.path.join(root, "cache114"), os.path.join(root, "jax114")
            tiny = (os.path.join(root, "cache20"), os.path.join(root, "jax20"))
            if "tiny_cold" in runs:
                result["tiny_cold"] = _run_train(os.path.join(root, "w0"), *tiny, [], 2, args.repo)
            if "sample114_cold" in runs:
                result["sample114_cold"] = _run_train(os.path.join(root, "w1"), c114, j114, all114, 2, args.repo)
            if "sample114_warm" in runs:
                result["sample114_warm"] = _run_train(os.path.join(root, "w2"), c114, j114, all114, 2, args.repo)
            if "sample114_resume" in runs:
                result["sample114_resume"] = _run_train(os.path.join(root, "w2"), c114, j114, all114, 4, args.repo)
            if "prepared114" in runs:  # all 114 languages prepared beforehand by the CLI; eval at step 1
                prep = os.path.join(root, "prep114")
                t0 = time.perf_counter()
                cmd = [
                    sys.executable,
                    "-m",
                    "data_pipelines.prepare",
                    "--config=configs/tiny.py",
                    f"--out={prep}",
                    *all114,
                ]
                subprocess.run(cmd, cwd=args.repo, env=dict(os.environ, **_ENV), check=True, capture_output=True)
                prepare_s = time.perf_counter() - t0
                flags = [*all114, f"--config.data.prepared_dir={prep}", "--config.train.eval_every=1",
                         "--config.train.eval_batches=4"]  # fmt: skip
                result["prepared114"] = _run_train(
                    os.path.join(root, "w5"), os.path.join(root, "c5"), j114, flags, 2, args.repo
                )
                result["prepared114"]["prepare_cli_seconds"] = round(prepare_s, 1)
            syn_args = ["--config.data.source=text", f"--config.data.path={syn}", "--config.data.languages=()"]
            c500, j500 = os.path.join(root, "c500"), os.path.join(root, "jax500")
            if "synthetic500" in runs:
                result["synthetic500"] = _run_train(os.path.join(root, "w3"), c500, j500, syn_args, 2, args.repo)
        c114, c500 = os.path.join(root, "cache114"), os.path.join(root, "c500")
        if os.path.realpath(args.repo) != os.path.realpath(REPO):
            result["repo"] = os.path.realpath(args.repo)
            args.batch_sizes = []  # the in-process figures are this checkout's
        for b in args.batch_sizes:
            result[f"throughput_114_b{b}"] = _throughput(_data_config(c114), b, args.seconds)
            result[f"throughput_500_b{b}"] = _throughput(_data_config(c500, syn), b, args.seconds)
        if "repo" not in result:
            result["checkpoint_114"] = _state_and_save(c114)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
