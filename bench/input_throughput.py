"""Input-pipeline throughput: tokens/s of `make_train_data` for a run config's data block and batch.

    python -m bench.input_throughput                       # configs/base.py: seq 512, its global batch, the sample
    python -m bench.input_throughput --batch_size=32 --batches=50 --config=configs/tiny.py

Measures the steady state (after the first batch; building the pipeline opens, or first prepares, the shards) on
this machine's CPUs, as one host would feed its devices. "tokens" counts every position of a batch (rows x seq_length); the non-pad
share is printed too. The pipeline never holds a step back as long as this figure exceeds the trainer's
tokens/s per host.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_config(path: str):
    spec = importlib.util.spec_from_file_location("bench_run_config", os.path.join(REPO, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/base.py", help="run config whose data block and batch to use")
    parser.add_argument("--batch_size", type=int, default=0, help="global batch (0 = the config's train.batch_size)")
    parser.add_argument("--seq_length", type=int, default=0, help="0 = the config's data.seq_length")
    parser.add_argument("--batches", type=int, default=5, help="batches timed after the warm-up batch")
    parser.add_argument("--shuffle_buffer", type=int, default=-1, help="-1 = the config's data.shuffle_buffer")
    parser.add_argument("--path", default="", help="read a local text folder (data.source=text) instead")
    parser.add_argument("--vocab_path", default="", help="'' = the config's data.vocab_path")
    args = parser.parse_args(argv)

    if REPO not in sys.path:
        sys.path.insert(0, REPO)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    from data_pipelines.input_pipeline import make_train_data

    if os.path.exists(os.path.join(REPO, args.config)):
        config = _load_config(args.config)
        data, batch = config.data, config.train.batch_size
    else:  # no run config (yet): the base run's data shape
        from data_pipelines.config import default_data_config

        data, batch = default_data_config(), 32
        data.seq_length = 512
    if args.batch_size:
        batch = args.batch_size
    if args.seq_length:
        data.seq_length = args.seq_length
    if args.path:
        data.source, data.path = "text", args.path
    if args.vocab_path:
        data.vocab_path = args.vocab_path
    if args.shuffle_buffer >= 0:
        data.shuffle_buffer = args.shuffle_buffer

    t0 = time.perf_counter()
    train = make_train_data(data, global_batch_size=batch, seed=0)
    first = next(train)
    warmup = time.perf_counter() - t0
    real = 0
    t1, c1 = time.perf_counter(), time.process_time()
    for _ in range(args.batches):
        b = next(train)
        real += int(b["attention_mask"].sum())
    elapsed = time.perf_counter() - t1
    cpu = time.process_time() - c1  # all threads of this process: the pipeline's CPU cost, load or not
    tokens = args.batches * batch * data.seq_length
    result = {
        "config": args.config,
        "source": data.source,
        "languages": len(train.languages),
        "batch": batch,
        "seq_length": data.seq_length,
        "shuffle_buffer": data.shuffle_buffer,
        "cpus": os.cpu_count(),
        "warmup_s": round(warmup, 2),
        "batches": args.batches,
        "seconds": round(elapsed, 3),
        "tokens_per_s": round(tokens / elapsed),
        "cpu_s": round(cpu, 3),
        "tokens_per_cpu_s": round(tokens / cpu),
        "non_pad_fraction": round(real / tokens, 3),
        "batches_per_s": round(args.batches / elapsed, 3),
        "first_batch_shape": list(first["input_ids"].shape),
    }
    print("command: python -m bench.input_throughput " + " ".join(argv if argv is not None else sys.argv[1:]))
    print(json.dumps(result))
    print(
        f"input pipeline: {result['tokens_per_s']:,} tokens/s, {result['tokens_per_cpu_s']:,} tokens per CPU-second "
        f"({batch} x {data.seq_length} per batch, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f})"
    )
    return result


if __name__ == "__main__":
    main()
