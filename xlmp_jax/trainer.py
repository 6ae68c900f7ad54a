"""The training run behind ``python -m xlmp_jax.train``: start-up in timed phases, then the loop.

The run resumes by itself from ``DIR/checkpoints`` (params, optimizer, step, RNG and the input
iterator's position, so the batches continue exactly where they stopped); SIGTERM saves a checkpoint
and raises ``Preempted`` (the CLI exits with status 143). Only process 0 writes ``DIR/metrics.jsonl``,
TensorBoard events (``DIR/tb``) and the console progress. The device is synchronised only every
``train.log_every`` steps: metrics are summed on the device in between.
"""

from __future__ import annotations

import functools
import itertools
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import ml_collections
import numpy as np

from xlmp_jax import config_utils, console
from xlmp_jax.batching import pad_rows
from xlmp_jax.faults import FaultInjector
from xlmp_jax.preemption import Preempted, Preemption

if TYPE_CHECKING:
    from data_pipelines.sharded import ShardedTrainData

config_utils.ensure_importable()  # train() imports data_pipelines


class TrainError(RuntimeError):
    """A run that cannot start or must stop; the message names the cause."""


# ----------------------------------------------------------------------------------------------------------------
# Start-up.


def prepare_workdir(workdir: str) -> str:
    """Creates the work directory and checks that it is writable (a clear error naming it if not)."""
    workdir = os.path.abspath(workdir)
    try:
        os.makedirs(workdir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=workdir, prefix=".write_test_"):
            pass
    except OSError as e:
        raise TrainError(f"work directory {workdir!r} is not writable: {e.strerror or e}") from e
    return workdir


class _StartupPhases:
    """Times the start-up phases and ends each at a boundary: its fault point, then the SIGTERM check."""

    def __init__(self, preemption: Preemption, faults: FaultInjector):
        self.preemption, self.faults = preemption, faults
        self.seconds: dict[str, float] = {}
        self._began = self._last = time.perf_counter()

    def end(self, phase: str) -> None:
        now = time.perf_counter()
        self.seconds[phase], self._last = now - self._last, now
        self.faults(f"after_{phase}")
        self.preemption.check_startup(phase)

    def summary(self) -> str:
        parts = ", ".join(f"{name.replace('_', ' ')} {s:.1f}s" for name, s in self.seconds.items())
        return f"start-up took {self._last - self._began:.1f}s ({parts})"


def _hide_accelerators_from_tensorflow() -> None:
    """The input pipeline uses TensorFlow on the CPU only; it must not take GPU memory from JAX.

    The first import of TensorFlow in a run: ``console`` keeps its C++ start-up lines off the console."""
    console.import_tensorflow(hide_gpus=True)


def train(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    peak_flops: float = 0.0,
    preemption: Preemption | None = None,
) -> dict[str, float]:
    """Trains ``config`` in ``workdir`` (resuming if it holds checkpoints); returns the last logged scalars.

    SIGTERM is recorded from the first line on (``preemption``: an armed one the caller owns, else this call
    arms its own): during start-up the run stops at the next phase boundary, after step 1 it saves a
    checkpoint; either way it raises ``Preempted``.
    """
    if preemption is None:
        with Preemption() as armed:
            return train(config, workdir, peak_flops=peak_flops, preemption=armed)
    phases = _StartupPhases(preemption, FaultInjector())
    from data_pipelines import preflight as data_preflight
    from xlmp_jax import lease

    model_config = config_utils.validate_config(config)
    data_preflight.check_run_data(config)  # vocabulary size, local files' first records, TFDS names
    workdir = prepare_workdir(workdir)
    with lease.hold_workdir(workdir) as held:  # one run per work directory, refused before anything compiles
        return _train_in(config, model_config, workdir, phases, peak_flops, held.check if held else lambda: None)


def _train_in(
    config: ml_collections.ConfigDict,
    model_config: Any,
    workdir: str,
    phases: _StartupPhases,
    peak_flops: float,
    check_lease: Callable[[], None],
) -> dict[str, float]:
    """``train`` once the work directory is this run's (``check_lease()`` raises once it no longer is)."""
    from xlmp_jax import checkpoint, compile_cache, sharding, steps

    tcfg = config.train
    # Before anything compiles (the init is a program too); the counters tell the log what the cache served.
    cache = (compile_cache.enable(tcfg.compilation_cache_dir), compile_cache.COUNTER.snapshot())
    mesh = sharding.make_mesh(config.mesh)
    sharding.check_batch_size(tcfg.batch_size, mesh, tcfg.grad_accum_steps)
    dp = sharding.data_parallel_size(mesh)
    if tcfg.eval_every and (tcfg.eval_batch_size % dp or tcfg.eval_batch_size % jax.process_count()):
        raise TrainError(
            f"train.eval_batch_size={tcfg.eval_batch_size} is not divisible by the data-parallel size {dp} "
            f"(or the process count {jax.process_count()})"
        )
    console.say(
        f"mesh {dict(mesh.shape)} over {jax.device_count()} {jax.devices()[0].device_kind} device(s), "
        f"{jax.process_count()} process(es); work directory {workdir}"
    )
    phases.end("config")

    _hide_accelerators_from_tensorflow()
    from data_pipelines.sharded import ShardCountError, ShardedTrainData

    try:
        data = ShardedTrainData(
            config.data, global_batch_size=tcfg.batch_size, num_shards=tcfg.data_shards, seed=tcfg.seed
        )
    except ShardCountError as e:  # a setting of the run, reported as the trainer's other setting errors
        raise TrainError(str(e)) from e
    eval_data = None
    if tcfg.eval_every:
        from data_pipelines.eval_data import BalancedEvalData

        # every trained language, equal rows; read at the first eval (off the start-up path)
        eval_data = BalancedEvalData(config.data, batch_size=tcfg.eval_batch_size, num_batches=tcfg.eval_batches)
    phases.end("data")

    state, shardings = steps.create_train_state(config, mesh, jax.random.key(tcfg.seed))
    phases.end("init")

    ckpt = checkpoint.Checkpointer(workdir, keep=tcfg.keep_checkpoints, faults=phases.faults)
    try:
        restored = ckpt.restore_latest(state, data if tcfg.restore_data else None)
        if restored is not None:
            state, start = restored
            console.say(f"resumed from {ckpt.directory / str(start)} (step {start})")
            if not tcfg.restore_data:
                data.skip_to(start)
                console.say(
                    f"train.restore_data=False: the input position was not restored; input continues at batch {start}"
                )
        else:
            start = 0
            if config.init_from_hf:
                from xlmp_jax.hf.load import load_hf_params

                params = load_hf_params(config.init_from_hf, model_config, jax.random.key(tcfg.seed + 1))
                state, shardings = steps.create_train_state(config, mesh, jax.random.key(tcfg.seed), params=params)
                console.say(f"initialised from the transformers checkpoint {config.init_from_hf}")
        phases.end("restore")
        last_step = min(tcfg.steps, tcfg.stop_after) if tcfg.stop_after else tcfg.steps
        if start >= last_step:
            return {}
        run = _Run(config, model_config, workdir, mesh, shardings, data, eval_data, ckpt, phases, cache, check_lease)
        return _train_loop(run, state, start, last_step, peak_flops=peak_flops)
    finally:
        ckpt.close()


# ----------------------------------------------------------------------------------------------------------------
# The loop.


class _Run(NamedTuple):
    """What start-up built for the loop."""

    config: ml_collections.ConfigDict
    model_config: Any
    workdir: str
    mesh: Any
    shardings: Any
    data: ShardedTrainData
    eval_data: Any
    ckpt: Any
    phases: _StartupPhases
    cache: tuple[str | None, tuple[int, int]]  # the compilation cache's directory, its counters at start-up
    check_lease: Callable[[], None]


def _batches(data) -> Iterator[dict]:
    """``data``'s batches, a ``TrainError`` (not ``StopIteration``) if it ends before the run does."""
    while True:
        try:
            yield next(data)
        except StopIteration:
            raise TrainError("the training data ran out before train.steps") from None


def _train_loop(run: _Run, state, start: int, last_step: int, *, peak_flops: float) -> dict[str, float]:
    """Steps ``start + 1 .. last_step``: the first batch and the compiled step are start-up's last phases."""
    from data_pipelines.config import max_predictions
    from xlmp_jax import compile_cache, flops, metrics, sharding, steps

    config, mesh, shardings, data, eval_data, ckpt, phases = (
        run.config, run.mesh, run.shardings, run.data, run.eval_data, run.ckpt, run.phases
    )  # fmt: skip
    tcfg, languages = config.train, list(data.languages)
    main_process = jax.process_index() == 0
    batches = _batches(data)
    first_batch = sharding.shard_batch(next(batches), mesh)
    phases.end("first_batch")
    # Compiled ahead of the first step, so that a SIGTERM during compilation stops before any step is taken.
    train_step = steps.make_train_step(config, mesh, shardings, num_languages=len(languages))
    train_step = train_step.lower(state, first_batch).compile()
    eval_step = steps.make_eval_step(config, mesh, shardings, num_languages=len(languages)) if eval_data else None
    phases.end("compile")
    cache_dir, cache_before = run.cache
    console.say(f"{phases.summary()}; {compile_cache.describe(cache_before, cache_dir)}")
    if main_process:  # only now: a run stopped during start-up leaves the work directory as it found it
        config_utils.save_config(config, run.workdir)

    seq = config.data.seq_length
    tokens_per_step = tcfg.batch_size * seq
    flops_per_token = flops.flops_per_token(run.model_config, seq, max_predictions(seq, config.data.mlm_rate))
    peak = metrics.peak_flops_per_device(jax.devices()[0].device_kind, peak_flops or tcfg.peak_flops)
    preemption, fault = phases.preemption, phases.faults
    writer = metrics.MetricsWriter(run.workdir, active=main_process, resume_step=start)
    progress = console.Progress(start, tcfg.steps, main_process)

    acc, last = None, {}
    window_start, window_steps, first = time.perf_counter(), 0, True
    sharded = itertools.chain([first_batch], (sharding.shard_batch(b, mesh) for b in batches))
    try:
        for step, batch in zip(range(start + 1, last_step + 1), sharded, strict=False):
            state, step_metrics = train_step(state, batch)
            acc = metrics.accumulate(acc, step_metrics)
            window_steps += 1
            progress.update(1)
            if first:  # one sync, to keep the first step's dispatch out of the throughput numbers
                jax.block_until_ready(acc)
                console.say(f"first step took {time.perf_counter() - window_start:.1f}s")
                window_start, window_steps, first = time.perf_counter(), 0, False
            fault("after_step", step)
            run.check_lease()  # before this step's writes: another run may own the work directory now
            preempted = preemption.reached(step)
            if preempted or step % tcfg.log_every == 0 or step == last_step:
                sums = {k: metrics.to_host(v) for k, v in acc.items()}
                elapsed = time.perf_counter() - window_start
                scalars, extra = metrics.summarize(sums, languages)
                if window_steps and elapsed > 0:
                    scalars["step_time_s"] = elapsed / window_steps
                    scalars["tokens_per_s"] = tokens_per_step * window_steps / elapsed
                    if peak > 0:
                        scalars["mfu"] = flops.mfu(scalars["tokens_per_s"], flops_per_token, peak * jax.device_count())
                writer.write(step, scalars, extra)
                last = scalars
                progress.log(step, scalars)
                acc, window_start, window_steps = None, time.perf_counter(), 0
                fault("after_log", step)
                if sums["nan_streak"] >= tcfg.max_consecutive_nan > 0:
                    raise TrainError(
                        f"stopping at step {step}: the loss or gradients were NaN/Inf in {int(sums['nan_streak'])} "
                        f"consecutive steps (train.max_consecutive_nan={tcfg.max_consecutive_nan}); those steps "
                        f"were skipped. Try a lower train.learning_rate (now {tcfg.learning_rate}) or a grad_clip."
                    )
            if preempted:
                ckpt.save(step, state, data=data, config=config)
                ckpt.wait()
                raise Preempted(f"SIGTERM: saved checkpoint {ckpt.directory / str(step)} and stopped")
            eval_loss = None
            if eval_step is not None and (step % tcfg.eval_every == 0 or step == tcfg.steps):
                in_eval = functools.partial(fault, "in_eval", step)
                eval_scalars, eval_extra = run_eval(config, eval_step, state, eval_data, languages, in_eval)
                writer.write(step, eval_scalars, eval_extra)
                eval_loss = eval_scalars.get("eval/loss")
                progress.log(step, eval_scalars)
            if step % tcfg.checkpoint_every == 0 or step == last_step or eval_loss is not None:
                ckpt.save(step, state, data=data, config=config, eval_loss=eval_loss)
                if fault.active:  # a fault must land after the commit, not race it
                    ckpt.wait()
                fault("after_checkpoint", step)
            if eval_loss is not None or step % tcfg.checkpoint_every == 0:
                window_start = time.perf_counter()  # eval and checkpoint time is not step time
    finally:
        writer.close()
        progress.close()
    return last


# ----------------------------------------------------------------------------------------------------------------
# Eval.


def run_eval(
    config: ml_collections.ConfigDict, eval_step, state, data, languages: Sequence[str], after_batch=None
) -> tuple[dict, dict]:
    """Held-out MLM loss/accuracy over every batch of ``data`` (the balanced set of
    ``make_balanced_eval_data``): ``eval/loss/<lang>`` per language, ``eval/loss`` their mean (every
    language weighs the same), ``eval/loss_tokens`` the token-weighted loss; accuracy likewise.
    ``after_batch()`` runs after each batch (the ``in_eval`` fault point)."""
    from xlmp_jax.metrics import language_means, summarize, to_host

    train = config.train
    rows, pc, pi = train.eval_batch_size, jax.process_count(), jax.process_index()
    total: dict[str, np.ndarray] | None = None
    for batch in data:
        batch = pad_rows(batch, rows, config.model.pad_token_id)
        local = {k: v[pi * rows // pc : (pi + 1) * rows // pc] for k, v in batch.items()}  # every host has all rows
        out = {k: to_host(v) for k, v in eval_step(state, local).items()}
        total = out if total is None else {k: total[k] + out[k] for k in total}
        if after_batch is not None:
            after_batch()
    if total is None:
        return {}, {}
    scalars, extra = summarize(total, languages, prefix="eval/")
    return language_means(scalars, languages, prefix="eval/"), extra
