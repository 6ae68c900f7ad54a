"""Cloud TPU VM pod slices through gcloud: create or reuse, install on every worker, train, watch, stop.

    python -m launch.tpu up --name=xlmp-v4 --zone=us-central2-b --project=my-proj \\
        --accelerator_type=v4-32 --config=configs/base.py --workdir=gs://my-bucket/xlmp/base \\
        --config.train.steps=100000

``up`` = preflight, ``create`` (reuse the TPU if ``describe`` finds it), ``install`` (pack this repo,
``tpu-vm scp`` it to every worker, venv + ``pip install -r requirements.txt -e . jax[tpu]``), ``start``
(``nohup python -m xlmp_jax.train ...`` on all workers at once; per-worker log ``~/xlmp-logs/train.log``,
pid in ``~/xlmp-logs/train.pid``), then ``logs`` (streams worker 0's log; Ctrl-C stops watching, not
training). ``stop`` sends SIGTERM (the trainer checkpoints, then exits); ``delete`` removes the TPU.
Every subcommand takes ``--dry-run``: it prints the exact gcloud commands and runs nothing. ``up``/``start``
add the slice's mesh and remat from ``launch.layouts`` (a ``--config.*`` override wins); ``--aot`` compiles
the run for the accelerator type on this machine first (``xlmp_jax.aot``; also in a dry run, which then
shows the verdict) and stops before creating anything if it does not fit.

The gcloud commands and the worker scripts are ``launch.tpu_vm.Tpu``; this module is the CLI.

Multi-slice (``--num_slices=N``) always goes through a queued resource (``--node-count=N``, slices
``NAME-0`` .. ``NAME-{N-1}``); the TPU runtime sets the MEGASCALE variables that
``jax.distributed.initialize()`` reads, and the config must set ``mesh.dcn_data=N`` (preflight checks).
``--queued`` requests a single slice through the queue as well (the way to get spot/reserved capacity).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from collections.abc import Sequence

from launch import accelerators, layouts, preflight
from launch.command_line import (
    REPO_ROOT,
    LaunchError,
    PreflightError,
    Runner,
    add_common_flags,
    config_argument,
    split_overrides,
)
from launch.tpu_vm import Tpu


def run_preflight(args: argparse.Namespace, overrides: Sequence[str], runner: Runner) -> None:
    accel = accelerators.tpu_accelerator(args.accelerator_type, args.num_slices)
    remote = "://" not in args.workdir
    if remote and accel.num_hosts > 1:
        raise PreflightError(
            f"--workdir={args.workdir}: {accel.name} has {accel.num_hosts} workers, which must share the work "
            "directory; use a gs:// bucket path"
        )
    if not args.git_url and pathlib.Path(config_argument(args.config).split(":")[0]).is_absolute():
        raise PreflightError(f"--config={args.config} lies outside {REPO_ROOT}, so it is not shipped")
    report = preflight.preflight(
        args.config, overrides, accel, args.workdir, dry_run=runner.dry_run, remote_workdir=remote
    )
    for note in report.notes:
        runner.note(f"preflight ok: {note}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m launch.tpu", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    tpu = argparse.ArgumentParser(add_help=False)
    tpu.add_argument("--name", required=True, help="TPU VM (or queued resource) name")
    tpu.add_argument("--zone", required=True)
    tpu.add_argument("--project", default="", help="GCP project ('' = gcloud's default)")
    tpu.add_argument("--num_slices", type=int, default=1, help="> 1: multi-slice over DCN (queued resource)")
    tpu.add_argument("--queued", action="store_true", help="request through a queued resource")
    tpu.add_argument("--log_dir", default="xlmp-logs", help="per-worker log directory (relative = under $HOME)")
    tpu.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true", help="print, run nothing")
    create = argparse.ArgumentParser(add_help=False)
    create.add_argument("--accelerator_type", required=True, help="v4-32, v5p-16, v5litepod-16, v6e-8, ...")
    create.add_argument("--runtime_version", default="", help="TPU software version ('' = the generation's default)")
    capacity = create.add_mutually_exclusive_group()
    capacity.add_argument("--spot", action="store_true")
    capacity.add_argument("--reserved", action="store_true")
    create.add_argument("--wait_minutes", type=float, default=120, help="how long to wait for a queued resource")
    install = argparse.ArgumentParser(add_help=False)
    install.add_argument("--remote_dir", default="xlmp", help="the repo on each worker (relative = under $HOME)")
    install.add_argument("--git_url", default="", help="clone this instead of copying the local checkout")
    install.add_argument("--git_ref", default="main")
    install.add_argument("--python", default="python3.11", help="interpreter the workers' venv is made with")
    train = argparse.ArgumentParser(add_help=False)
    add_common_flags(train, dry_run_flag=False)  # --dry-run comes with the tpu flags
    train.add_argument("--no_stream", action="store_true", help="do not stream worker 0's log after starting")
    train.add_argument(
        "--aot", action="store_true", help="before creating anything, compile the run for the TPU type (xlmp_jax.aot)"
    )
    sub.add_parser("up", parents=[tpu, create, install, train], help="preflight, create/reuse, install, start, logs")
    sub.add_parser("create", parents=[tpu, create], help="create the TPU (or reuse it)")
    sub.add_parser("install", parents=[tpu, install], help="copy/clone the repo and install it on every worker")
    sub.add_parser("start", parents=[tpu, create, install, train], help="preflight and start training")
    logs = sub.add_parser("logs", parents=[tpu], help="stream a worker's log")
    logs.add_argument("--worker", default="0")
    sub.add_parser("stop", parents=[tpu], help="SIGTERM the trainer on every worker (it checkpoints first)")
    sub.add_parser("delete", parents=[tpu], help="delete the TPU VM(s) / queued resource (pass --queued for one)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args, extra = build_parser().parse_known_args(argv)
    runner = Runner(dry_run=args.dry_run)
    try:
        overrides = split_overrides(extra)
        if overrides and args.action not in ("up", "start"):
            raise LaunchError(f"config overrides {overrides} only make sense with `up` or `start`")
        tpu = Tpu(args, runner)
        if args.action in ("up", "start"):  # the slice's layout (launch.layouts); the user's overrides win
            implied = layouts.layout_overrides(args.config, args.accelerator_type, overrides)
            if implied:
                runner.note(f"layout for {args.accelerator_type} (launch.layouts): {' '.join(implied)}")
            overrides = implied + overrides
        if args.action in ("up", "start") and not args.skip_preflight:
            run_preflight(args, overrides, runner)
        if args.action in ("up", "start") and args.aot:  # also in dry runs: it creates nothing
            verdict = preflight.aot_check(args.config, overrides, args.accelerator_type, args.num_slices)
            runner.note(f"compile check: {verdict}")
        if args.action in ("up", "create"):
            tpu.create()
        if args.action in ("up", "install"):
            tpu.install()
        if args.action in ("up", "start"):
            tpu.start(overrides)
            if not args.no_stream:
                tpu.logs()
        if args.action == "logs":
            tpu.logs(args.worker)
        if args.action == "stop":
            tpu.stop()
        if args.action == "delete":
            tpu.delete()
    except LaunchError as e:
        print(f"launch.tpu: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
