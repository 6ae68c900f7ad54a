"""Shared pieces of the benchmarks: synthetic MLM batches, the xlmp and transformers train steps, timing.

Every benchmark measures in *worker* subprocesses (one per framework/variant) started by one parent
command, so each worker's peak host memory (``ru_maxrss``) is its own and the ratios come from one run.
A worker prints one ``RESULT {json}`` line; the parent collects them and prints a table.

The xlmp side is always the project's own train step (``xlmp_jax.training.state.create_train_state`` /
``make_train_step``); the JSON says so (``step_impl: "project"``).

Over 300 lines because it is the one place both sides of every ratio are built (the synthetic batch, the
project's step, transformers' step, the timing and memory probes): kept together so that the two sides of a
comparison cannot drift apart.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULT_PREFIX = "RESULT "
MLM_RATE = 0.15
MASK_FRACTION_DENSE = None  # sentinel: "every position" (equal-algorithm variant)

# Bench model sizes. "tiny" and "base" are the project's presets (xlmp_jax.model.model_config.SIZES); "small" is a
# bench-only size between them (a laptop-sized encoder with XLM-R's 250k vocabulary would be all head).
BENCH_SIZES: dict[str, dict[str, int]] = {
    "small": dict(
        hidden_size=256, num_layers=4, num_heads=4, intermediate_size=1024, vocab_size=8002, max_position_embeddings=514
    ),
}


# --------------------------------------------------------------------------------------------- helpers
def max_predictions(seq_length: int, mlm_rate: float) -> int:
    """K masked positions gathered per row: the data pipeline's rule."""
    from data_pipelines.batch_format import max_predictions as rule

    return int(rule(seq_length, mlm_rate))


def dense_mlm_rate(seq_length: int) -> float:
    """An ``mlm_rate`` whose K = ceil(T * rate) + 1 equals T: the gathered head then covers every position.

    This is how the equal-algorithm variant runs through the project's own train step unchanged: it
    gathers K = T positions (a permutation of the sequence) and computes logits at all of them.
    """
    return (seq_length - 1) / seq_length


def model_config(size: str, *, pool: bool, dtype: str = "float32", **overrides: Any):
    """A ModelConfig for a bench size (project presets plus ``BENCH_SIZES``).

    The pool is the old, MLM-only one (``OLD_POOL_OPTIONS``): the step BENCHMARKS.md measured, kept when the
    pool's training options became PoolConfig's defaults, so a timing moves only when a benchmark says so.
    """
    from xlmp_jax.model.model_config import SIZES, ModelConfig
    from xlmp_jax.model.prompt_pool import OLD_POOL_OPTIONS, PoolConfig

    pool_config = PoolConfig(**OLD_POOL_OPTIONS) if pool else None
    if size in SIZES:
        return ModelConfig.preset(size, pool=pool_config, dtype=dtype, **overrides)
    if size in BENCH_SIZES:
        return ModelConfig(**BENCH_SIZES[size], pool=pool_config, dtype=dtype, **overrides)
    raise ValueError(f"unknown bench size {size!r}; expected one of {tuple(SIZES) + tuple(BENCH_SIZES)}")


def synthetic_batch(
    batch_size: int, seq_length: int, vocab_size: int, mlm_rate: float = MLM_RATE, seed: int = 0
) -> dict[str, np.ndarray]:
    """A full-length MLM batch in the data pipeline's batch format (data_pipelines/README.md), 15 % positions selected.

    Ids avoid the special tokens (0..3) and the mask id; every row holds exactly ``round(T * rate)``
    selected positions, so xlmp's K-gather and transformers' -100 labels see the same work.
    """
    rng = np.random.default_rng(seed)
    ids = rng.integers(4, vocab_size - 1, size=(batch_size, seq_length), dtype=np.int32)
    ids[:, 0], ids[:, -1] = 0, 2
    num = max(1, round(seq_length * mlm_rate))
    weights = np.zeros((batch_size, seq_length), np.float32)
    for row in range(batch_size):
        weights[row, 1 + rng.choice(seq_length - 2, size=num, replace=False)] = 1.0
    targets = np.where(weights > 0, ids, 0).astype(np.int32)
    inputs = np.where(weights > 0, vocab_size - 1, ids).astype(np.int32)  # <mask> = vocab_size - 1
    positions = np.broadcast_to(np.arange(seq_length, dtype=np.int32) + 2, ids.shape).copy()
    return dict(
        input_ids=inputs,
        attention_mask=np.ones_like(ids),
        positions=positions,
        targets=targets,
        weights=weights,
        language=np.zeros((batch_size,), np.int32),
    )


# Length of the step's per-language metric arrays in the benches: room for CC-100's 116 languages.
LANGUAGES = 128


def stats(values: Sequence[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def peak_rss_mib() -> float:
    """This process's peak resident set (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "cpus": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
        info["load_avg_1m"] = os.getloadavg()[0]
    except OSError:
        pass
    return info


def emit(result: dict[str, Any]) -> None:
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def finish(bench: str, json_path: str, **fields: Any) -> dict[str, Any]:
    """A benchmark's summary (name, UTC date, machine, then ``fields``): written to ``json_path`` if
    given, printed as the ``RESULT`` line, and returned."""
    summary = {
        "bench": bench,
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "machine": machine_info(),
        **fields,
    }
    if json_path:
        with open(json_path, "w") as f:
            json.dump(summary, f, indent=1)
    emit(summary)
    return summary


def run_worker(args: list[str], env: dict[str, str] | None = None, timeout: float = 3600) -> dict[str, Any]:
    """Runs ``python -m <args>`` in a fresh process and returns its RESULT dict (error text if it failed)."""
    full_env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env or {})}
    full_env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    proc = subprocess.run(
        [sys.executable, *args], cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout
    )
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    tail = (proc.stdout + proc.stderr)[-3000:]
    return {"error": f"worker {' '.join(args)} exited {proc.returncode}", "log_tail": tail}


def time_steps(step: Callable[[], Any], warmup: int, steps: int) -> tuple[list[float], float]:
    """Runs ``warmup`` then ``steps`` blocking steps; returns per-step seconds and the first step's time."""
    t0 = time.perf_counter()
    step()
    first = time.perf_counter() - t0
    for _ in range(max(0, warmup - 1)):
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return times, first


# ------------------------------------------------------------------------------------------- FLOPs
def flops_per_token(model_cfg, seq_length: int, num_predictions: int) -> tuple[float, str]:
    """Training FLOPs per input token (``xlmp_jax.training.flops``, formula in BENCHMARKS.md) and where it came from."""
    from xlmp_jax.training import flops

    return float(flops.flops_per_token(model_cfg, seq_length, num_predictions)), "xlmp_jax.training.flops"


def matmul_peak_gflops(n: int = 2048, repeats: int = 10, dtype: str = "float32") -> dict[str, float]:
    """Measured matmul rate of this process's default JAX device: n x n @ n x n, median of ``repeats``."""
    import jax

    key = jax.random.key(0)
    a = jax.random.normal(key, (n, n), dtype)
    b = jax.random.normal(jax.random.fold_in(key, 1), (n, n), dtype)
    mm = jax.jit(lambda x, y: x @ y)
    mm(a, b).block_until_ready()
    mm(a, b).block_until_ready()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        mm(a, b).block_until_ready()
        times.append(time.perf_counter() - t0)
    rates = [2 * n**3 / t / 1e9 for t in times]
    return {"n": n, "dtype": dtype, **{k: v for k, v in stats(rates).items()}}


def torch_matmul_peak_gflops(n: int = 2048, repeats: int = 10) -> dict[str, float]:
    """The same n x n fp32 matmul through torch (MKL/oneDNN), for comparison with XLA's."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t0)
    return {"n": n, "dtype": "float32", **stats([2 * n**3 / t / 1e9 for t in times])}


# ------------------------------------------------------------------------------------- xlmp steps
def run_config(model_cfg, *, batch_size: int, seq_length: int, mlm_rate: float, mesh: dict | None = None):
    """The bench's run (a resolved ``RunConfig``): the project's base config with the bench's model."""
    import dataclasses

    import ml_collections

    from configs import base as base_config

    config = base_config.get_config()
    model = {f.name: getattr(model_cfg, f.name) for f in dataclasses.fields(model_cfg)}
    pool = model.pop("pool")
    with config.unlocked():
        config.model = ml_collections.ConfigDict(model)
        config.model.pool = ml_collections.ConfigDict(
            {"enabled": pool is not None, **(dataclasses.asdict(pool) if pool is not None else {})}
        )
        config.train.batch_size = batch_size
        config.train.grad_accum_steps = 1
        config.data.seq_length = seq_length
        config.data.mlm_rate = mlm_rate
        config.mesh.data, config.mesh.fsdp, config.mesh.tensor = -1, 1, 1
        config.mesh.update(mesh or {})
    from xlmp_jax import config_utils

    return config_utils.resolve(config)


FEEDS = ("device", "host", "prefetch")


def _xlmp_parts(model_cfg, *, batch_size: int, seq_length: int, dense_head: bool, mesh: dict | None, num_devices):
    """The pieces both the timed step and the compile-only path build: run config, mesh, optimizer, step."""
    import jax

    from xlmp_jax.training import optim, sharding, steps

    mlm_rate = dense_mlm_rate(seq_length) if dense_head else MLM_RATE
    devices = jax.devices()[:num_devices] if num_devices else jax.devices()
    run = run_config(model_cfg, batch_size=batch_size, seq_length=seq_length, mlm_rate=mlm_rate, mesh=mesh)
    device_mesh = sharding.make_mesh(run.mesh, devices=devices)
    optimizer = optim.make_optimizer(run.train)
    return run, device_mesh, optimizer, steps, sharding


def compile_xlmp_step(
    model_cfg, *, batch_size: int, seq_length: int, dense_head: bool, num_devices: int | None = 1
) -> dict[str, Any]:
    """Compiles the project's train step from abstract shapes only (no state on the device) and returns
    the compile time and XLA's memory analysis.

    The GPU bench runs this for every variant in parallel processes first, with JAX's persistent cache
    on, so that the timed runs after it load their executables instead of compiling one by one: the same
    shapes and shardings lower to the same program, hence the same cache key.
    """
    import jax

    from xlmp_jax.training import state

    run, device_mesh, optimizer, steps, sharding = _xlmp_parts(
        model_cfg,
        batch_size=batch_size,
        seq_length=seq_length,
        dense_head=dense_head,
        mesh=None,
        num_devices=num_devices,
    )
    abstract, shardings = state.abstract_train_state(run.model, optimizer.tx, device_mesh, run.mesh.logical_rules)
    batch_sharding = sharding.batch_sharding(device_mesh)
    batch = {
        k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=batch_sharding)
        for k, v in synthetic_batch(batch_size, seq_length, model_cfg.vocab_size).items()
    }
    train_step = steps.make_train_step(run, optimizer, device_mesh, shardings, num_languages=LANGUAGES)
    t0 = time.perf_counter()
    compiled = train_step.lower(abstract, batch).compile()
    return {"compile_s": time.perf_counter() - t0, **compiled_memory(compiled)}


def make_xlmp_step(
    model_cfg,
    *,
    batch_size: int,
    seq_length: int,
    dense_head: bool,
    mesh: dict | None = None,
    num_devices: int | None = 1,
    feed: str = "device",
) -> tuple[Callable[[], Any], Callable[[], dict]]:
    """Returns (step, cost_fn): ``step()`` runs one blocking train step of the project on a fixed batch.

    The step is compiled ahead of time here (``lower().compile()``), once: its compile time is part of
    the build, and ``cost_fn()`` reads XLA's cost and memory analyses of that same executable. The mesh
    spans the first ``num_devices`` devices (None: all of them).

    ``feed`` says where each step's batch comes from, so that the host-to-device copy can be measured:
    ``device`` reuses one batch already on the device (the step alone); ``host`` copies the host batch
    before each step and waits for nothing else (what a loop without prefetch pays); ``prefetch`` starts
    the next step's copy right after dispatching the step, so the copy overlaps the compute (a
    double-buffered ``prefetch_to_device`` of depth 1).
    """
    import jax

    from xlmp_jax.training import state

    if feed not in FEEDS:
        raise ValueError(f"feed={feed!r} is not one of {FEEDS}")
    run, device_mesh, optimizer, steps, sharding = _xlmp_parts(
        model_cfg,
        batch_size=batch_size,
        seq_length=seq_length,
        dense_head=dense_head,
        mesh=mesh,
        num_devices=num_devices,
    )
    batch = synthetic_batch(batch_size, seq_length, model_cfg.vocab_size)
    train_state, shardings = state.create_train_state(
        run.model, optimizer.tx, device_mesh, jax.random.key(0), rules=run.mesh.logical_rules
    )
    train_step = steps.make_train_step(run, optimizer, device_mesh, shardings, num_languages=LANGUAGES)
    device_batch = sharding.shard_batch(batch, device_mesh)
    t0 = time.perf_counter()
    compiled = train_step.lower(train_state, device_batch).compile()
    compile_s = time.perf_counter() - t0
    holder = {"state": train_state, "next": device_batch}

    def step():
        if feed == "host":
            holder["next"] = sharding.shard_batch(batch, device_mesh)
        holder["state"], out = compiled(holder["state"], holder["next"])
        if feed == "prefetch":
            holder["next"] = sharding.shard_batch(batch, device_mesh)
        return jax.block_until_ready(out["loss"])

    def cost():
        return {**_cost(compiled), **compiled_memory(compiled), "compile_s": compile_s}

    step.compiled = compiled  # the executable itself, for its HLO text (bench/profile_step.py)
    return step, cost


def compiled_memory(compiled) -> dict[str, int]:
    """XLA's memory analysis of a compiled program (what the AOT path reports): bytes of arguments,
    outputs, temporaries and their aliased part, and their sum minus the donated (aliased) bytes."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - backend dependent; absent is reported as absent
        return {}
    if m is None:
        return {}
    fields = {
        name: int(getattr(m, f"{name}_size_in_bytes", 0) or 0) for name in ("argument", "output", "temp", "alias")
    }
    out = {f"compiled_{k}_bytes": v for k, v in fields.items()}
    out["compiled_total_bytes"] = fields["argument"] + fields["output"] + fields["temp"] - fields["alias"]
    return out


def _cost(compiled) -> dict:
    """XLA's own cost analysis of the compiled step (flops per device)."""
    try:
        analysis = compiled.cost_analysis()
    except Exception as e:  # noqa: BLE001 - cost analysis is best-effort and backend dependent
        return {"error": repr(e)}
    if isinstance(analysis, list):
        analysis = analysis[0]
    return {k: float(analysis[k]) for k in ("flops", "bytes accessed") if k in (analysis or {})}


# -------------------------------------------------------------------------------- transformers step
def make_torch_step(model_cfg, *, batch_size: int, seq_length: int, threads: int | None = None):
    """transformers' XLMRobertaForMaskedLM as users train it: labels -100 off the masked positions,
    logits everywhere, torch.optim.AdamW with XLM-R's betas/eps, dropout on, fp32, clip-grad-norm."""
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaForMaskedLM

    from xlmp_jax.hf.layout import hf_config_dict

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    hf_cfg = XLMRobertaConfig(**hf_config_dict(model_cfg))  # the same architecture as ours
    model = XLMRobertaForMaskedLM(hf_cfg)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01)
    batch = synthetic_batch(batch_size, seq_length, model_cfg.vocab_size)
    input_ids = torch.from_numpy(batch["input_ids"]).long()
    attention_mask = torch.from_numpy(batch["attention_mask"]).long()
    labels = torch.from_numpy(np.where(batch["weights"] > 0, batch["targets"], -100)).long()

    def step():
        out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(out.loss.detach())

    info = {
        "attn_implementation": getattr(model.config, "_attn_implementation", "?"),
        "threads": torch.get_num_threads(),
    }
    return step, info


def device_memory(model_cfg, *, batch_size: int, seq_length: int, dense_head: bool) -> dict[str, Any]:
    """Accelerator peak memory (``memory_stats``; absent on CPU) next to ``xlmp_jax.training.memory``'s plan."""
    import jax

    out: dict[str, Any] = {"platform": jax.devices()[0].platform, "device_kind": jax.devices()[0].device_kind}
    stats_ = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats_:
        out["device_peak_bytes"] = int(stats_["peak_bytes_in_use"])
        out["device_bytes_limit"] = int(stats_.get("bytes_limit", 0))
    try:
        from xlmp_jax.training import memory

        mlm_rate = dense_mlm_rate(seq_length) if dense_head else MLM_RATE
        run = run_config(model_cfg, batch_size=batch_size, seq_length=seq_length, mlm_rate=mlm_rate)
        out["plan_bytes"] = int(memory.plan(run, 1)["total"])
    except ImportError:
        pass
    return out
