"""Preparing a corpus at scale: `python -m data_pipelines.prepare` on a generated corpus, 1 and 2 Beam workers.

    python -m bench.prepare_scale --megabytes=1024 --workers=1,2        # throughput and the 1-vs-2 speed-up
    python -m bench.prepare_scale --megabytes=4096 --workers=2          # peak memory at 4x the corpus
    python -m bench.prepare_scale --megabytes=1024 --workers= --split_rate   # the split pass alone, plain and .xz

Each run is the real CLI (DirectRunner; `--direct_running_mode=multi_processing` with `--direct_num_workers=W`,
so every worker is its own process) on a CC-100-layout corpus made by `bench.corpus` (16 languages, English a
third of it) with the base run's seq_length 512. Reported per run: wall time, MB of raw text per second,
tokens per second (train + validation rows, `<s>` included), the peak RSS of each process of the job (sampled
every 0.2 s with psutil) and the peak of their sum, and a hash of every shard and the manifest (equal for 1
and 2 workers: the output does not depend on the worker count). Results are appended to
`bench/results/prepare_scale.json`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import psutil

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, "bench", "results", "prepare_scale.json")


def folder_hash(folder: str) -> str:
    h = hashlib.sha256()
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), "rb") as f:
            h.update(name.encode() + b"\0" + hashlib.sha256(f.read()).digest())
    return h.hexdigest()


def run_prepare(corpus: str, out: str, workers: int, languages: int) -> dict:
    """The CLI on `corpus` with `workers` worker processes; wall time and peak memory of its process tree."""
    cmd = [
        sys.executable, "-m", "data_pipelines.prepare", "--config=configs/base.py", f"--out={out}",
        "--config.data.source=cc100", f"--config.data.path={corpus}", "--config.data.languages=()",
        f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing",
    ]  # fmt: skip
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    root = psutil.Process(proc.pid)
    peak_each: dict[int, int] = {}
    peak_sum = 0
    while proc.poll() is None:
        total = 0
        try:
            for p in [root, *root.children(recursive=True)]:
                try:
                    rss = p.memory_info().rss
                except psutil.Error:
                    continue
                peak_each[p.pid] = max(peak_each.get(p.pid, 0), rss)
                total += rss
        except psutil.Error:
            pass
        peak_sum = max(peak_sum, total)
        time.sleep(0.2)
    wall = time.perf_counter() - start
    log = proc.stdout.read()
    if proc.returncode:
        raise RuntimeError(f"prepare failed ({proc.returncode}):\n{log[-3000:]}")
    manifest = json.load(open(os.path.join(out, "manifest.json")))
    tokens = sum(s["tokens"] for s in manifest["splits"])
    raw = sum(os.path.getsize(os.path.join(corpus, f"{e}.txt")) for e in manifest["entries"])
    big = sorted(peak_each.values(), reverse=True)
    return {
        "workers": workers,
        "languages": languages,
        "megabytes": round(raw / 1e6, 1),
        "wall_s": round(wall, 1),
        "mb_per_s": round(raw / 1e6 / wall, 2),
        "tokens": tokens,
        "tokens_per_s": round(tokens / wall),
        "shards": sum(len(s["shards"]) for s in manifest["splits"]),
        "processes": len(peak_each),
        "peak_rss_gb_largest_processes": [round(b / 2**30, 2) for b in big[:4]],
        "peak_rss_gb_sum": round(peak_sum / 2**30, 2),
        "output_sha256": folder_hash(out),
    }


def split_rate(corpus: str, lang: str = "en") -> dict:
    """MB/s of the sequential split pass (the critical path of a corpus whose largest language dominates) on one
    language's file, plain and as .xz (CC-100's format; compressed here once with preset 1, then kept)."""
    import lzma

    from data_pipelines import line_sources, prepare

    plain = os.path.join(corpus, f"{lang}.txt")
    packed = os.path.join(corpus + "-xz", f"{lang}.txt.xz")
    if not os.path.exists(packed):
        os.makedirs(os.path.dirname(packed), exist_ok=True)
        with open(plain, "rb") as src, lzma.open(packed + ".tmp", "wb", preset=1) as dst:
            shutil.copyfileobj(src, dst, 1 << 24)
        os.replace(packed + ".tmp", packed)
    out = {"language": lang, "megabytes": round(os.path.getsize(plain) / 1e6, 1)}
    for name, path in (("plain", plain), ("xz", packed)):
        work = tempfile.mkdtemp(prefix="xlmp-split-")
        try:
            os.makedirs(os.path.join(work, prepare.WORK))
            settings = prepare.Settings(work, "", 512, "complete", prepare.DEFAULT_UNIT_LINES)
            inp = line_sources.Input(entry=lang, split="train", kind="lines", reader="text", paths=(path,))
            t0 = time.perf_counter()
            units = prepare.split_input(inp, settings)
            seconds = time.perf_counter() - t0
        finally:
            shutil.rmtree(work, ignore_errors=True)
        out[f"{name}_seconds"] = round(seconds, 1)
        out[f"{name}_mb_per_s"] = round(out["megabytes"] * 0.9 / seconds, 1)  # the train split: 90 % of the lines
        out["units"] = len(units)
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--megabytes", type=float, default=1024)
    parser.add_argument("--languages", type=int, default=16)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--corpus", default="", help="where the generated corpus is kept ('' = a temp folder)")
    parser.add_argument("--split_rate", action="store_true", help="also time the split pass alone (plain, .xz)")
    args = parser.parse_args(argv)
    sys.path.insert(0, REPO)
    from bench import corpus as corpus_lib

    corpus = args.corpus or os.path.join(tempfile.gettempdir(), f"xlmp-corpus-{int(args.megabytes)}mb")
    corpus_lib.make(corpus, args.megabytes, args.languages)
    results = []
    for workers in [int(w) for w in args.workers.split(",") if w]:
        out = tempfile.mkdtemp(prefix="xlmp-prepared-")
        try:
            r = run_prepare(corpus, out, workers, args.languages)
        finally:
            shutil.rmtree(out, ignore_errors=True)
        r.update(cpus=os.cpu_count(), date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
        print(json.dumps(r), flush=True)
        results.append(r)
    if len(results) > 1:
        base = results[0]
        for r in results[1:]:
            print(
                f"{r['workers']} workers: {base['wall_s'] / r['wall_s']:.2f}x the speed of {base['workers']}; "
                f"output {'identical' if r['output_sha256'] == base['output_sha256'] else 'DIFFERENT'}"
            )
    if args.split_rate:
        r = dict(split_rate(corpus), cpus=os.cpu_count(), date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
        print(json.dumps(r), flush=True)
        results.append(r)
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    previous = json.load(open(OUT)) if os.path.exists(OUT) else []
    with open(OUT, "w") as f:
        json.dump(previous + results, f, indent=1)
    return results


if __name__ == "__main__":
    main()
