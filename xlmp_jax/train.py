"""Pre-trains XLM-P (or the no-pool baseline): ``python -m xlmp_jax.train --config=configs/tiny.py --workdir=DIR``.

One command from a laptop to a pod: the mesh comes from ``config.mesh``, multi-host start-up from the
environment (``jax.distributed.initialize``: TPU VMs and SLURM are auto-detected; or pass
``--coordinator_address/--num_processes/--process_id``), and ``XLMP_NUM_CPU_DEVICES=K`` simulates K CPU
devices per process for local rehearsals. Each process reads only its own share of every batch.

The run resumes by itself from ``DIR/checkpoints`` (params, optimizer, step, RNG and the input
iterator's position, so the batches continue exactly where they stopped); SIGTERM saves a checkpoint
and exits with status 143 (preemption). Only process 0 writes ``DIR/metrics.jsonl``, TensorBoard
events (``DIR/tb``) and the console progress. The device is synchronised only every
``train.log_every`` steps: metrics are summed on the device in between.
"""

from __future__ import annotations

import os

# Must run before JAX initialises its backends (the first device query).
_NUM_CPU_DEVICES = os.environ.get("XLMP_NUM_CPU_DEVICES", "")

import functools  # noqa: E402
import itertools  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator, Sequence  # noqa: E402
from typing import Any, NamedTuple  # noqa: E402

import jax  # noqa: E402

if _NUM_CPU_DEVICES:
    jax.config.update("jax_num_cpu_devices", int(_NUM_CPU_DEVICES))

import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from xlmp_jax import config_utils, console  # noqa: E402
from xlmp_jax.faults import FaultInjector  # noqa: E402
from xlmp_jax.preemption import PREEMPTED_EXIT, Preempted, Preemption  # noqa: E402, F401 (PREEMPTED_EXIT: API)

config_utils.ensure_importable()
# Without --config, ml_collections parses the default config and applies the --config.x overrides while the
# flag is defined, at import, where a bad override is a traceback; naming the default defers that to
# _parse_flags, which reports it in one line.
if __name__ == "__main__" and not any(a == "--config" or a.startswith("--config=") for a in sys.argv[1:]):
    sys.argv.insert(1, f"--config={config_utils.DEFAULT_CONFIG}")

_CONFIG = config_flags.DEFINE_config_file(
    "config", config_utils.DEFAULT_CONFIG, "Run config file (configs/<name>.py); override fields with --config.a.b=v."
)
_WORKDIR = flags.DEFINE_string("workdir", "workdirs/default", "Where checkpoints, metrics and the config are written.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", "", "host:port of process 0, for multi-process runs.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 0, "Number of processes (with --coordinator_address).")
_PROCESS_ID = flags.DEFINE_integer("process_id", -1, "This process's index (with --coordinator_address).")
_PLAN = flags.DEFINE_bool("plan", False, "Print the memory plan (xlmp_jax.memory.plan_report) and exit.")
_PEAK_FLOPS = flags.DEFINE_float("peak_flops", 0.0, "Peak FLOP/s per device for MFU (default: table / config).")


class TrainError(RuntimeError):
    """A run that cannot start or must stop; the message names the cause."""


# ----------------------------------------------------------------------------------------------------------------
# Start-up.


def initialize_distributed(coordinator: str = "", num_processes: int = 0, process_id: int = -1) -> None:
    """Joins the processes of a multi-host job into one JAX runtime (no-op for a single process).

    Explicit flags win; otherwise ``jax.distributed.initialize()`` auto-detects TPU VM pods and SLURM
    jobs of more than one task (and ``JAX_COORDINATOR_ADDRESS``).
    """
    if coordinator or num_processes > 1:
        if not coordinator or num_processes < 1 or process_id < 0:
            raise TrainError(
                "multi-process runs need all of --coordinator_address, --num_processes and --process_id "
                f"(got {coordinator!r}, {num_processes}, {process_id})"
            )
        jax.distributed.initialize(coordinator, num_processes, process_id)
        return
    env = os.environ
    slurm = "SLURM_JOB_ID" in env and int(env.get("SLURM_NTASKS", env.get("SLURM_NPROCS", "1")) or 1) > 1
    tpu_pod = "," in env.get("TPU_WORKER_HOSTNAMES", "") or bool(env.get("MEGASCALE_COORDINATOR_ADDRESS"))
    if slurm or tpu_pod or env.get("JAX_COORDINATOR_ADDRESS"):
        jax.distributed.initialize()


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


def print_plan(config: ml_collections.ConfigDict, num_devices: int) -> None:
    try:
        from xlmp_jax import memory
    except ImportError:
        print("memory plan not available: xlmp_jax.memory is not installed in this checkout")
        return
    print(memory.plan_report(config, num_devices))


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


# ----------------------------------------------------------------------------------------------------------------
# Eval.


def _pad_to(batch: dict[str, np.ndarray], rows: int, pad_id: int) -> dict[str, np.ndarray]:
    n = len(batch["input_ids"])
    if n == rows:
        return batch
    fill = {"input_ids": pad_id, "positions": pad_id}
    return {
        k: np.concatenate([v, np.full((rows - n, *v.shape[1:]), fill.get(k, 0), v.dtype)]) for k, v in batch.items()
    }


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
        batch = _pad_to({k: np.asarray(v) for k, v in batch.items()}, rows, config.model.pad_token_id)
        local = {k: v[pi * rows // pc : (pi + 1) * rows // pc] for k, v in batch.items()}  # every host has all rows
        out = {k: to_host(v) for k, v in eval_step(state, local).items()}
        total = out if total is None else {k: total[k] + out[k] for k in total}
        if after_batch is not None:
            after_batch()
    if total is None:
        return {}, {}
    scalars, extra = summarize(total, languages, prefix="eval/")
    return language_means(scalars, languages, prefix="eval/"), extra


# ----------------------------------------------------------------------------------------------------------------
# The run.


class ShardedTrainData:
    """This process's share of the input: ``train.data_shards / process_count`` shards, rows concatenated.

    By default there is one shard per process (then this is just that process's ``TrainData``). More
    shards than processes let one process feed exactly the global batches of a multi-host run, e.g. a
    single-host rehearsal of a 2-host job; its checkpoints' input state is interchangeable with theirs.
    """

    def __init__(self, data_config, *, global_batch_size: int, num_shards: int, seed: int):
        from data_pipelines.input_pipeline import make_train_data

        pc, pi = jax.process_count(), jax.process_index()
        num_shards = num_shards or pc
        if num_shards % pc or global_batch_size % num_shards:
            raise TrainError(
                f"train.data_shards={num_shards} must be a multiple of the process count {pc} and divide "
                f"train.batch_size={global_batch_size}"
            )
        per = num_shards // pc
        self.shards = [
            make_train_data(
                data_config,
                global_batch_size=global_batch_size,
                process_index=pi * per + j,
                process_count=num_shards,
                seed=seed,
            )
            for j in range(per)
        ]
        self.languages = list(self.shards[0].languages)
        self.vocab = self.shards[0].vocab
        self.seq_length = self.shards[0].seq_length

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batches = [next(shard) for shard in self.shards]
        if len(batches) == 1:
            return batches[0]
        return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}

    def save(self, directory: str) -> None:
        for shard in self.shards:
            shard.save(directory)

    def restore(self, directory: str) -> None:
        for shard in self.shards:
            shard.restore(directory)

    def skip_to(self, batch_index: int) -> None:
        """Continues every shard at batch `batch_index` without a saved position (its counters restart at 0)."""
        for shard in self.shards:
            shard.skip_to(batch_index)


def _batches(data) -> Iterator[dict]:
    while True:
        try:
            yield next(data)
        except StopIteration:
            raise TrainError("the training data ran out before train.steps") from None


def _say(message: str) -> None:
    """Process 0's console (the run's story: mesh, resume, compile time); absl log elsewhere."""
    if jax.process_index() == 0:
        from tqdm import tqdm

        tqdm.write(f"xlmp_jax.train: {message}", file=sys.stdout)  # above the progress bar, if one is drawn
        sys.stdout.flush()
    logging.info(message)


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
    _say(
        f"mesh {dict(mesh.shape)} over {jax.device_count()} {jax.devices()[0].device_kind} device(s), "
        f"{jax.process_count()} process(es); work directory {workdir}"
    )
    phases.end("config")

    _hide_accelerators_from_tensorflow()
    data = ShardedTrainData(config.data, global_batch_size=tcfg.batch_size, num_shards=tcfg.data_shards, seed=tcfg.seed)
    eval_data = None
    if tcfg.eval_every:
        from data_pipelines.input_pipeline import BalancedEvalData

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
            _say(f"resumed from {ckpt.directory / str(start)} (step {start})")
            if not tcfg.restore_data:
                data.skip_to(start)
                _say(f"train.restore_data=False: the input position was not restored; input continues at batch {start}")
        else:
            start = 0
            if config.init_from_hf:
                from xlmp_jax.hf.load import load_hf_params

                params = load_hf_params(config.init_from_hf, model_config, jax.random.key(tcfg.seed + 1))
                state, shardings = steps.create_train_state(config, mesh, jax.random.key(tcfg.seed), params=params)
                _say(f"initialised from the transformers checkpoint {config.init_from_hf}")
        phases.end("restore")
        last_step = min(tcfg.steps, tcfg.stop_after) if tcfg.stop_after else tcfg.steps
        if start >= last_step:
            return {}
        run = _Run(config, model_config, workdir, mesh, shardings, data, eval_data, ckpt, phases, cache, check_lease)
        return _train_loop(run, state, start, last_step, peak_flops=peak_flops)
    finally:
        ckpt.close()


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
    _say(f"{phases.summary()}; {compile_cache.describe(cache_before, cache_dir)}")
    if main_process:  # only now: a run stopped during start-up leaves the work directory as it found it
        config_utils.save_config(config, run.workdir)

    seq = config.data.seq_length
    tokens_per_step = tcfg.batch_size * seq
    flops_per_token = flops.flops_per_token(run.model_config, seq, max_predictions(seq, config.data.mlm_rate))
    peak = metrics.peak_flops_per_device(jax.devices()[0].device_kind, peak_flops or tcfg.peak_flops)
    preemption, fault = phases.preemption, phases.faults
    writer = metrics.MetricsWriter(run.workdir, active=main_process, resume_step=start)
    progress = _progress(start, tcfg.steps, main_process)

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
                _say(f"first step took {time.perf_counter() - window_start:.1f}s")
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


class _progress:
    """Process 0's progress: a tqdm bar (step, loss, tokens/s, ETA) on a terminal, plain lines otherwise.

    Every log step also prints one line (``step N: loss=...``); without a terminal on stderr (a log file,
    a pipe) there is no bar and that line ends with the ETA. Silent off process 0.
    """

    def __init__(self, start: int, total: int, active: bool):
        self.active, self.start, self.total = active, start, total
        self.began = time.perf_counter()
        self.postfix: dict[str, str] = {}
        self.bar = None
        if active and console.is_terminal(sys.stderr):
            from tqdm import tqdm

            self.bar = tqdm(
                total=total,
                initial=start,
                desc="train",
                unit="step",
                file=sys.stderr,
                **console.bar_geometry(sys.stderr),
            )

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def log(self, step: int, scalars: dict[str, float]) -> None:
        if not self.active:
            return
        keys = [k for k in ("loss", "mlm_accuracy", "eval/loss", "eval/mlm_accuracy") if k in scalars]
        keys += [k for k in ("learning_rate", "grad_norm", "tokens_per_s", "mfu") if k in scalars]
        line = f"step {step}: " + ", ".join(f"{k}={_fmt(scalars[k])}" for k in keys)
        short = {"loss": "loss", "eval/loss": "eval_loss", "tokens_per_s": "tok/s"}
        self.postfix.update({name: _fmt(scalars[k]) for k, name in short.items() if k in scalars})
        if self.bar is not None:
            self.bar.set_postfix(self.postfix, refresh=False)
            self.bar.write(line, file=sys.stdout)
        else:
            print(f"{line}, eta={self.eta(step)}", flush=True)

    def eta(self, step: int) -> str:
        """Remaining time at this run's average pace since the loop began ('?' before any step)."""
        done, elapsed = step - self.start, time.perf_counter() - self.began
        if done <= 0 or elapsed <= 0:
            return "?"
        seconds = round(max(self.total - step, 0) * elapsed / done)
        return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _fmt(v: float) -> str:
    if not math.isfinite(v):
        return str(v)
    if v and (abs(v) >= 1e5 or abs(v) < 1e-3):
        return f"{v:.3g}"
    return f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"


# ----------------------------------------------------------------------------------------------------------------
# CLI.


def _parse_flags(argv: list[str]) -> list[str]:
    """absl parsing, after a clear check that the --config file exists (ml_collections buries it)."""
    spec = None
    for i, arg in enumerate(argv[1:], 1):
        if arg.startswith("--config="):
            spec = arg.split("=", 1)[1]
        elif arg == "--config" and i + 1 < len(argv):
            spec = argv[i + 1]
    if spec is not None:
        try:
            config_utils.check_config_file(spec)
        except config_utils.ConfigError as e:
            _fail(str(e))
    try:
        return flags.FLAGS(argv)
    except config_utils.OVERRIDE_ERRORS as e:
        _fail(f"bad command line: {config_utils.describe_override_error(e, argv)}")


def _fail(message: str) -> None:
    print(f"xlmp_jax.train: error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def _report_pool(config: ml_collections.ConfigDict, workdir: str) -> None:
    """``train.pool_report``: after a finished single-process run, what its pool learned on held-out lines."""
    if not (config.train.pool_report and config.model.pool.enabled and jax.process_count() == 1):
        return
    data = config.data
    if data.source == "text" and os.path.isdir(data.path):
        text_dir = data.path
    elif data.source == "sample":
        text_dir = ""
    else:
        _say("pool report skipped: it reads held-out lines of the sample or a text folder (use xlmp_jax.evaluate)")
        return
    from xlmp_jax import evaluate

    out = os.path.join(os.path.abspath(workdir), "pool_report")
    _say(evaluate.pool_report(workdir, list(data.languages), out, text_dir))


def main(argv: Sequence[str]) -> None:
    del argv
    console.quiet_library_logs()  # Orbax and TensorFlow are chatty at INFO
    from xlmp_jax.checkpoint import CheckpointError, IncompatibleCheckpointError
    from xlmp_jax.lease import LeaseHeld

    expected = (
        config_utils.ConfigError,
        TrainError,
        CheckpointError,
        IncompatibleCheckpointError,
        ValueError,
        LeaseHeld,
    )
    try:
        with Preemption() as preemption:  # armed before anything is printed: the first line means "ready"
            config = _CONFIG.value
            config_utils.validate_config(config)
            initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
            if _PLAN.value:
                print_plan(config, jax.device_count())
                return
            train(config, _WORKDIR.value, peak_flops=_PEAK_FLOPS.value, preemption=preemption)
        _report_pool(config, _WORKDIR.value)
    except Preempted as e:
        print(f"xlmp_jax.train: {e}", flush=True)
        sys.exit(PREEMPTED_EXIT)
    except expected as e:
        _fail(str(e))


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
