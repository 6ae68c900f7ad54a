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
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import jax
import ml_collections
import numpy as np

from data_pipelines import data_checks as data_preflight
from data_pipelines.batch_format import max_predictions, pad_rows
from data_pipelines.sharded import ShardCountError, ShardedTrainData
from xlmp_jax import config_utils
from xlmp_jax.run_config import RunConfig
from xlmp_jax.runtime import compile_cache, console, lease
from xlmp_jax.runtime.faults import FaultInjector
from xlmp_jax.runtime.preemption import Preempted, Preemption
from xlmp_jax.training import flops, optim, sharding, state, steps
from xlmp_jax.training import goodput as goodput_lib
from xlmp_jax.training.goodput import Goodput
from xlmp_jax.training.profiling import StepProfiler
from xlmp_jax.training.startup import StartupPhases, TrainError, hide_accelerators_from_tensorflow, prepare_workdir

config_utils.ensure_importable()  # train() imports data_pipelines


def train(
    config: RunConfig | ml_collections.ConfigDict,
    workdir: str,
    *,
    peak_flops: float = 0.0,
    preemption: Preemption | None = None,
    started_at: float | None = None,
) -> dict[str, float]:
    """Trains ``config`` in ``workdir`` (resuming if it holds checkpoints); returns the last logged scalars.

    ``started_at`` (Unix seconds): where this attempt's goodput account starts; the CLI passes its process'
    start, so the imports count; by default, this call.

    ``config`` is a run resolved by ``config_utils.resolve`` (the CLI's), or a loaded ConfigDict, resolved here.
    SIGTERM is recorded from the first line on (``preemption``: an armed one the caller owns, else this call
    arms its own): during start-up the run stops at the next phase boundary, after step 1 it saves a
    checkpoint; either way it raises ``Preempted``.
    """
    if preemption is None:
        with Preemption() as armed:
            return train(config, workdir, peak_flops=peak_flops, preemption=armed, started_at=started_at)
    started_at = time.time() if started_at is None else started_at
    phases = StartupPhases(preemption, FaultInjector())
    run = config if isinstance(config, RunConfig) else config_utils.resolve(config)
    data_preflight.check_run_data(run)  # vocabulary size, local files' first records, TFDS names
    workdir = prepare_workdir(workdir)
    with lease.hold_workdir(workdir) as held:  # one run per work directory, refused before anything compiles
        return _train_in(run, workdir, phases, peak_flops, held.check if held else lambda: None, started_at)


def _train_in(
    run: RunConfig,
    workdir: str,
    phases: StartupPhases,
    peak_flops: float,
    check_lease: Callable[[], None],
    started_at: float,
) -> dict[str, float]:
    """``train`` once the work directory is this run's (``check_lease()`` raises once it no longer is)."""
    from xlmp_jax.training import checkpoint  # Orbax (tensorstore): a real import cost, off the CLI's start

    tcfg = run.train
    main_process = jax.process_index() == 0
    phases.goodput = Goodput(
        workdir, active=main_process, start_time=started_at, cloud_logger=tcfg.goodput_cloud_logger
    )
    phases.goodput.charge("startup/process")  # (the CLI's interpreter and imports,) config and data checks, lease
    # Before anything compiles (the init is a program too); the counters tell the log what the cache served.
    cache = (compile_cache.enable(tcfg.compilation_cache_dir), compile_cache.COUNTER.snapshot())
    mesh = sharding.make_mesh(run.mesh)
    sharding.check_fits(run.model, tcfg, mesh, run.mesh.logical_rules)
    console.say(
        f"mesh {dict(mesh.shape)} over {jax.device_count()} {jax.devices()[0].device_kind} device(s), "
        f"{jax.process_count()} process(es); work directory {workdir}"
    )
    phases.end("config")

    hide_accelerators_from_tensorflow()
    try:
        data = ShardedTrainData(
            run.data, global_batch_size=tcfg.batch_size, num_shards=tcfg.data_shards, seed=tcfg.seed
        )
    except ShardCountError as e:  # a setting of the run, reported as the trainer's other setting errors
        raise TrainError(str(e)) from e
    eval_data = None
    if tcfg.eval_every:
        from data_pipelines.eval_data import BalancedEvalData  # grain, array_record: only with evals

        # every trained language, equal rows; read at the first eval (off the start-up path)
        eval_data = BalancedEvalData(
            run.data, batch_size=tcfg.eval_batch_size, num_batches=tcfg.eval_batches, prepared=data.prepared
        )
    phases.end("data")

    optimizer = optim.make_optimizer(tcfg)
    ckpt = checkpoint.Checkpointer(workdir, keep=tcfg.keep_checkpoints, faults=phases.faults)
    try:
        # A run that resumes restores into the abstract state: nothing is initialised only to be overwritten.
        resuming = ckpt.latest_step() is not None
        if resuming:
            check_resumable(ckpt, run)
            target, shardings = state.abstract_train_state(run.model, optimizer.tx, mesh, run.mesh.logical_rules)
        else:
            target, shardings = _initial_state(run, optimizer, mesh)
        if optimizer.groups:
            say_groups(run, target.params)
        phases.end("init")
        restored = ckpt.restore_latest(target, data if tcfg.restore_data else None) if resuming else None
        if restored is not None:
            train_state, start = restored
            console.say(f"resumed from {ckpt.directory / str(start)} (step {start})")
            if not tcfg.restore_data:
                data.skip_to(start)
                console.say(
                    f"train.restore_data=False: the input position was not restored; input continues at batch {start}"
                )
        else:
            start = 0
            # every checkpoint was unreadable (set aside by restore_latest): a fresh start after all
            train_state = target if not resuming else _initial_state(run, optimizer, mesh)[0]
        phases.end("restore")
        if start >= tcfg.last_step:
            return {}
        loop = _Run(run, workdir, mesh, optimizer, shardings, data, eval_data, ckpt, phases, cache, check_lease)
        return _train_loop(loop, train_state, start, peak_flops=peak_flops)
    finally:
        ckpt.close()


def check_resumable(ckpt, run: RunConfig) -> None:
    """Refuses, naming both, a checkpoint whose optimizer state another set of parameter groups wrote."""
    from xlmp_jax.training.checkpoint_read import saved_config  # Orbax: off the CLI's start

    step = ckpt.latest_step()
    saved = saved_config(ckpt.directory / str(step))
    if saved is None:
        return
    theirs = optim.state_layout(saved.get("train", {}).get("param_groups", {}))
    ours = optim.state_layout(run.resolved.train.param_groups)
    if theirs != ours:
        raise TrainError(
            f"checkpoint {ckpt.directory / str(step)} was written with train.param_groups {optim.describe_layout(theirs)}, "
            f"this run has {optim.describe_layout(ours)}: the optimizer state has another layout. Resume with the "
            "checkpoint's groups, or start a new work directory from its params (init from an export of it)."
        )


def say_groups(run: RunConfig, params: Any) -> None:
    """The parameter groups with their parameter counts and settings, at start-up."""
    for line in optim.describe_groups(run.train, optim.group_sizes(params, run.train.param_groups)):
        console.say(line)


def _initial_state(run: RunConfig, optimizer, mesh) -> tuple[Any, Any]:
    """The state a run starts from: random, or the transformers checkpoint ``init_from_hf``."""
    params = None
    if run.init_from_hf:
        from xlmp_jax.hf.load import load_hf_params  # the one arrow up (training -> hf): ARCHITECTURE.md

        params = load_hf_params(run.init_from_hf, run.model, jax.random.key(run.train.seed + 1))
        console.say(f"initialised from the transformers checkpoint {run.init_from_hf}")
    return state.create_train_state(
        run.model, optimizer.tx, mesh, jax.random.key(run.train.seed), params=params, rules=run.mesh.logical_rules
    )


# ----------------------------------------------------------------------------------------------------------------
# The loop.


class _Run(NamedTuple):
    """What start-up built for the loop."""

    run: RunConfig
    workdir: str
    mesh: Any
    optimizer: Any  # optim.Optimizer: the state's, and the train step's
    shardings: Any
    data: ShardedTrainData
    eval_data: Any
    ckpt: Any
    phases: StartupPhases
    cache: tuple[str | None, tuple[int, int]]  # the compilation cache's directory, its counters at start-up
    check_lease: Callable[[], None]


def _batches(data) -> Iterator[dict]:
    """``data``'s batches, a ``TrainError`` (not ``StopIteration``) if it ends before the run does."""
    while True:
        try:
            yield next(data)
        except StopIteration:
            raise TrainError("the training data ran out before train.steps") from None


def _train_loop(loop: _Run, state, start: int, *, peak_flops: float) -> dict[str, float]:
    """Steps ``start + 1 .. train.last_step``: the first batch and the compiled step are start-up's last phases."""
    from xlmp_jax.training import metrics  # TensorBoard's protos: a real import cost, off the CLI's start

    run, mesh, shardings, data, eval_data, ckpt, phases = (
        loop.run, loop.mesh, loop.shardings, loop.data, loop.eval_data, loop.ckpt, loop.phases
    )  # fmt: skip
    tcfg, languages, last_step = run.train, list(data.languages), run.train.last_step
    main_process = jax.process_index() == 0
    batches = _batches(data)
    first_batch = sharding.shard_batch(next(batches), mesh)
    phases.end("first_batch")
    # Compiled ahead of the first step, so that a SIGTERM during compilation stops before any step is taken.
    # One program per phase of the parameter groups (a group frozen for its first updates is left out of the
    # gradient until then): the first now, a later one when its update comes.
    optimizer, goodput = loop.optimizer, phases.goodput

    def compiled_step(frozen: frozenset[str], batch):
        step_fn = steps.make_train_step(
            run, optimizer, mesh, shardings, num_languages=len(languages), frozen_groups=frozen
        )
        return step_fn.lower(state, batch).compile()

    frozen = optimizer.frozen_groups(start)
    train_step = compiled_step(frozen, first_batch)
    eval_step = None
    if eval_data:
        eval_step = steps.make_eval_step(
            run.model, run.data.mlm_rate, mesh, shardings, num_languages=len(languages), rules=run.mesh.logical_rules
        )
    phases.end("compile")
    cache_dir, cache_before = loop.cache
    console.say(f"{phases.summary()}; {compile_cache.describe(cache_before, cache_dir)}")
    if main_process:  # only now: a run stopped during start-up leaves the work directory as it found it
        config_utils.save_config(run.resolved, loop.workdir)

    seq = run.data.seq_length
    tokens_per_step = tcfg.batch_size * seq
    flops_per_token = flops.flops_per_token(run.model, seq, max_predictions(seq, run.data.mlm_rate))
    peak = metrics.peak_flops_per_device(jax.devices()[0].device_kind, peak_flops or tcfg.peak_flops)
    preemption, fault = phases.preemption, phases.faults
    writer = metrics.MetricsWriter(loop.workdir, active=main_process, resume_step=start)
    progress = console.Progress(start, tcfg.steps, main_process)
    profiler = StepProfiler(loop.workdir, tcfg.profile_steps, active=main_process or tcfg.profile_all_hosts)
    goodput.write()

    acc, last = None, {}
    window_start, window_steps, first = time.perf_counter(), 0, True
    sharded = itertools.chain([first_batch], (sharding.shard_batch(b, mesh) for b in batches))
    try:
        for step, batch in zip(range(start + 1, last_step + 1), sharded, strict=False):
            if optimizer.groups and optimizer.frozen_groups(step - 1) != frozen:  # the next phase of the groups
                goodput.charge_steps()
                frozen = optimizer.frozen_groups(step - 1)
                train_step = compiled_step(frozen, batch)
                goodput.charge("compile")
                console.say(f"step {step}: parameter groups frozen now: {', '.join(sorted(frozen)) or 'none'}")
            with profiler.step(step):
                state, step_metrics = train_step(state, batch)
            goodput.step_taken(step)
            profiler.after_step(step, state)
            acc = metrics.accumulate(acc, step_metrics)
            window_steps += 1
            progress.update(1)
            if first:  # one sync, to keep the first step's dispatch out of the throughput numbers
                jax.block_until_ready(acc)
                console.say(f"first step took {time.perf_counter() - window_start:.1f}s")
                window_start, window_steps, first = time.perf_counter(), 0, False
            fault("after_step", step)
            loop.check_lease()  # before this step's writes: another run may own the work directory now
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
                goodput.charge_steps()
                goodput.write()
                fault("after_log", step)
                if sums["nan_streak"] >= tcfg.max_consecutive_nan > 0:
                    raise TrainError(
                        f"stopping at step {step}: the loss or gradients were NaN/Inf in {int(sums['nan_streak'])} "
                        f"consecutive steps (train.max_consecutive_nan={tcfg.max_consecutive_nan}); those steps "
                        f"were skipped. Try a lower train.learning_rate (now {tcfg.learning_rate}) or a grad_clip."
                    )
            if preempted:
                goodput.charge_steps()
                ckpt.save(step, state, data=data, config=run.resolved)
                ckpt.wait()
                goodput.charge("checkpoint_save")
                goodput.write()
                raise Preempted(f"SIGTERM: saved checkpoint {ckpt.directory / str(step)} and stopped")
            eval_loss = None
            if eval_step is not None and (step % tcfg.eval_every == 0 or step == tcfg.steps):
                in_eval = functools.partial(fault, "in_eval", step)
                jax.block_until_ready(state.step)  # the steps' time is not the eval's
                goodput.charge_steps()
                eval_scalars, eval_extra = run_eval(run, eval_step, state, eval_data, languages, in_eval)
                writer.write(step, eval_scalars, eval_extra)
                eval_loss = eval_scalars.get("eval/loss")
                progress.log(step, eval_scalars)
                goodput.charge("eval")
            if step % tcfg.checkpoint_every == 0 or step == last_step or eval_loss is not None:
                jax.block_until_ready(state.step)
                goodput.charge_steps()
                ckpt.save(step, state, data=data, config=run.resolved, eval_loss=eval_loss)
                if fault.active:  # a fault must land after the commit, not race it
                    ckpt.wait()
                goodput.charge("checkpoint_save")
                goodput.write()
                fault("after_checkpoint", step)
            if eval_loss is not None or step % tcfg.checkpoint_every == 0:
                window_start = time.perf_counter()  # eval and checkpoint time is not step time
    finally:
        profiler.stop()
        writer.close()
        progress.close()
    ckpt.wait()  # the last save's commit belongs to this run's account
    goodput.charge("checkpoint_save")
    goodput.write(final=True)
    if main_process:
        console.say(goodput_lib.describe(goodput_lib.summarize(goodput_lib.read_records(loop.workdir))))
    return last


# ----------------------------------------------------------------------------------------------------------------
# Eval.


def run_eval(run: RunConfig, eval_step, state, data, languages: Sequence[str], after_batch=None) -> tuple[dict, dict]:
    """Held-out MLM loss/accuracy over every batch of ``data`` (the balanced set of
    ``make_balanced_eval_data``): ``eval/loss/<lang>`` per language, ``eval/loss`` their mean (every
    language weighs the same), ``eval/loss_tokens`` the token-weighted loss; accuracy likewise.
    ``after_batch()`` runs after each batch (the ``in_eval`` fault point)."""
    from xlmp_jax.training.metrics import language_means, summarize, to_host  # TensorBoard: off the CLI's start

    rows, pc, pi = run.train.eval_batch_size, jax.process_count(), jax.process_index()
    total: dict[str, np.ndarray] | None = None
    for batch in data:
        batch = pad_rows(batch, rows, run.model.pad_token_id)
        local = {k: v[pi * rows // pc : (pi + 1) * rows // pc] for k, v in batch.items()}  # every host has all rows
        out = {k: to_host(v) for k, v in eval_step(state, local).items()}
        total = out if total is None else {k: total[k] + out[k] for k in total}
        if after_batch is not None:
            after_batch()
    if total is None:
        return {}, {}
    scalars, extra = summarize(total, languages, prefix="eval/")
    return language_means(scalars, languages, prefix="eval/"), extra
