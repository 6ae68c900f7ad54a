"""Pre-trains XLM-P (or the no-pool baseline): ``python -m xlmp_jax.train --config=configs/tiny.py --workdir=DIR``.

One command from a laptop to a pod: the mesh comes from ``config.mesh``, multi-host start-up from the
environment (``jax.distributed.initialize``: TPU VMs and SLURM are auto-detected; or pass
``--coordinator_address/--num_processes/--process_id``), and ``XLMP_NUM_CPU_DEVICES=K`` simulates K CPU
devices per process for local rehearsals. Each process reads only its own share of every batch.

This module is the command line: flags, multi-host start-up, ``--plan`` and clear one-line errors. The run
itself (start-up phases, resume, the loop) is ``xlmp_jax.training.trainer.train``; a SIGTERM exits with status 143.
"""

from __future__ import annotations

import os

# Must run before JAX initialises its backends (the first device query).
_NUM_CPU_DEVICES = os.environ.get("XLMP_NUM_CPU_DEVICES", "")

import sys  # noqa: E402
from collections.abc import Sequence  # noqa: E402

import jax  # noqa: E402

if _NUM_CPU_DEVICES:
    jax.config.update("jax_num_cpu_devices", int(_NUM_CPU_DEVICES))

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from data_pipelines import sources  # noqa: E402
from xlmp_jax import config_utils  # noqa: E402
from xlmp_jax.run_config import RunConfig  # noqa: E402
from xlmp_jax.runtime import console  # noqa: E402
from xlmp_jax.runtime.lease import LeaseHeld  # noqa: E402
from xlmp_jax.runtime.preemption import PREEMPTED_EXIT, Preempted, Preemption  # noqa: E402
from xlmp_jax.training import memory  # noqa: E402
from xlmp_jax.training.goodput import process_start_time  # noqa: E402
from xlmp_jax.training.trainer import TrainError, train  # noqa: E402

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
_PLAN = flags.DEFINE_bool("plan", False, "Print the memory plan (xlmp_jax.training.memory.plan_report) and exit.")
_PEAK_FLOPS = flags.DEFINE_float("peak_flops", 0.0, "Peak FLOP/s per device for MFU (default: table / config).")


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


def print_plan(run: RunConfig, num_devices: int) -> None:
    print(memory.plan_report(run, num_devices))


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


def _report_pool(run: RunConfig, workdir: str) -> None:
    """``train.pool_report``: after a finished single-process run, what its pool learned on held-out lines."""
    if not (run.train.pool_report and run.model.pool is not None and jax.process_count() == 1):
        return
    data = run.data
    text_dir = sources.get(data.source).heldout_text_dir(data)
    if text_dir is None:
        console.say(
            "pool report skipped: it reads held-out lines of the sample or a text folder (use xlmp_jax.evaluate)"
        )
        return
    from xlmp_jax import evaluate  # the evals (scipy, sklearn): seconds to import, only for the report

    out = os.path.join(os.path.abspath(workdir), "pool_report")
    console.say(evaluate.pool_report(workdir, list(data.languages), out, text_dir))


def main(argv: Sequence[str]) -> None:
    del argv
    console.quiet_library_logs()  # Orbax and TensorFlow are chatty at INFO
    from xlmp_jax.training.checkpoint import CheckpointError, IncompatibleCheckpointError  # Orbax: off the CLI's start

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
            run = config_utils.resolve(_CONFIG.value)  # the one parse of this run's config
            initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
            if _PLAN.value:
                print_plan(run, jax.device_count())
                return
            train(
                run,
                _WORKDIR.value,
                peak_flops=_PEAK_FLOPS.value,
                preemption=preemption,
                started_at=process_start_time(),  # the imports are part of the attempt's goodput account
            )
        _report_pool(run, _WORKDIR.value)
    except Preempted as e:
        print(f"xlmp_jax.train: {e}", flush=True)
        sys.exit(PREEMPTED_EXIT)
    except expected as e:
        _fail(str(e))


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
