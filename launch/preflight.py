"""Checks a launch before it spends money: config, mesh vs. accelerator, batch split, writable workdir.

Everything here runs on the machine that launches, in seconds, and fails with one message naming the
bad value. The mesh and batch rules are the trainer's own (``xlmp_jax.training.sharding``): ``mesh.data/fsdp/
tensor`` describe one slice (-1 = the rest), ``mesh.dcn_data`` multiplies ``data`` across slices, and
each micro-batch splits over ``data x fsdp`` (``dcn_data`` included) and over the processes.

The device counts of each accelerator type are ``launch.accelerators``; a TPU type's mesh and remat come
from ``launch.layouts`` unless overridden. ``--aot`` (``aot_check``) goes further and compiles the run for
the TPU type on this machine (``xlmp_jax.aot``, minutes rather than seconds): a layout that does not fit in
HBM fails here instead of on the pod.
CLI: ``python -m launch.preflight --config=configs/base.py --accelerator=v4-32 --workdir=gs://b/run [--aot]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from launch import layouts
from launch.accelerators import Accelerator, gpu_accelerator, tpu_accelerator
from launch.command_line import REPO_ROOT, LaunchError, PreflightError, split_overrides

if TYPE_CHECKING:
    from xlmp_jax.run_config import RunConfig


def load_config(config: str, overrides: Sequence[str] = ()) -> RunConfig:
    """The run the trainer will see: ``configs/<x>.py`` + ``--config.x=v`` overrides, resolved.

    Goes through ``xlmp_jax.config_utils.load_run`` (ml_collections ``config_flags``, then ``resolve``: the
    trainer's loader), so an unknown field, a wrong type or a bad value fails here exactly as it would in
    the job (field checks only: the data may live on the cluster, so no file is opened but the vocabulary).
    """
    from xlmp_jax import config_utils

    try:
        cfg = config_utils.load_run(config, overrides)
        if os.path.isfile(cfg.data.vocab_path):  # one here (the shipped sample's): its size must be the model's
            from data_pipelines import data_checks as data_preflight

            size = data_preflight.vocabulary_size(cfg.data.vocab_path)
            data_preflight.check_vocab_size(cfg.model.vocab_size, cfg.data.vocab_path, size)
    except ValueError as e:  # ConfigError is one
        raise PreflightError(str(e)) from e
    return cfg


def resolve_mesh(config: RunConfig, accelerator: Accelerator) -> dict[str, int]:
    """The mesh the trainer will build on ``accelerator``: ``{'dcn_data', 'data', 'fsdp', 'tensor'}`` sizes."""
    from xlmp_jax.training import sharding

    dcn = config.mesh.dcn_data
    if accelerator.num_slices > 1 and dcn != accelerator.num_slices:
        raise PreflightError(
            f"mesh.dcn_data={dcn} but the job has {accelerator.num_slices} slices: set "
            f"--config.mesh.dcn_data={accelerator.num_slices} so the data axis spans the slices"
        )
    if accelerator.num_devices % dcn:
        raise PreflightError(
            f"mesh.dcn_data={dcn} does not divide the {accelerator.num_devices} devices of {accelerator.name}"
        )
    try:
        data, fsdp, tensor = sharding.slice_shape(config.mesh, accelerator.num_devices // dcn)
    except ValueError as e:
        raise PreflightError(f"the mesh does not fit {accelerator.name}: {e}") from e
    return {"dcn_data": dcn, "data": data, "fsdp": fsdp, "tensor": tensor}


def check_batch(config: RunConfig, mesh: dict[str, int], accelerator: Accelerator) -> None:
    """``train.batch_size`` (per micro-batch) must split over data x fsdp and over the processes."""
    batch, accum = config.train.batch_size, config.train.grad_accum_steps
    # The rule of xlmp_jax.training.sharding.check_batch_size, on the mesh shape alone: that function asks JAX for
    # the process count, which would start a backend (and claim GPUs) on the machine that only launches.
    dp = mesh["dcn_data"] * mesh["data"] * mesh["fsdp"]
    micro = batch // accum
    if micro % dp:
        what = f"train.batch_size={batch}" + (f" / train.grad_accum_steps={accum} = {micro}" if accum > 1 else "")
        raise PreflightError(
            f"{what} is not divisible by the data-parallel size {dp} (mesh.dcn_data={mesh['dcn_data']} x "
            f"mesh.data={mesh['data']} x mesh.fsdp={mesh['fsdp']}) on {accelerator.name}"
        )
    if batch % accelerator.num_processes:
        raise PreflightError(
            f"train.batch_size={batch} is not divisible by the {accelerator.num_processes} processes of "
            f"{accelerator.name} (each process feeds batch_size / processes rows)"
        )


def check_workdir(workdir: str, *, dry_run: bool = False, remote: bool = False) -> str:
    """Makes sure ``workdir`` can be written; returns a note saying what was checked.

    ``gs://`` (any ``scheme://``) is probed with a write and delete through ``tf.io.gfile`` (skipped in
    dry-run mode: it needs credentials and the network). A local path is probed with a temporary file;
    in dry-run mode, or when ``remote`` (the path names a directory on other machines), nothing is
    created and only what can be seen from here is checked.
    """
    if not workdir:
        raise PreflightError("--workdir is empty")
    if "://" in workdir:
        if dry_run:
            return f"workdir {workdir}: write check skipped in --dry-run (it needs the network and credentials)"
        import tensorflow as tf

        probe = f"{workdir.rstrip('/')}/.xlmp_preflight_{uuid.uuid4().hex}"
        try:
            tf.io.gfile.makedirs(workdir)
            with tf.io.gfile.GFile(probe, "w") as f:
                f.write("xlmp preflight probe\n")
            tf.io.gfile.remove(probe)
        except Exception as e:  # noqa: BLE001 -- any failure means "not writable"; the message says why
            raise PreflightError(f"--workdir={workdir} is not writable from here: {type(e).__name__}: {e}") from e
        return f"workdir {workdir}: writable (probe object written and deleted)"
    if remote:
        return f"workdir {workdir}: a path on the remote machines, not checked from here"
    path = os.path.abspath(workdir)
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise PreflightError(f"--workdir={workdir}: {existing!r} exists and is not a directory")
    if dry_run or existing != path:
        if not os.access(existing, os.W_OK | os.X_OK):
            raise PreflightError(f"--workdir={workdir} is not writable: no write permission on {existing!r}")
        if dry_run:
            return f"workdir {workdir}: {existing} is writable (nothing created in --dry-run)"
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as e:
            raise PreflightError(f"--workdir={workdir} cannot be created: {e}") from e
    try:
        with tempfile.NamedTemporaryFile(dir=path, prefix=".xlmp_preflight_"):
            pass
    except OSError as e:
        raise PreflightError(f"--workdir={workdir} is not writable: {e}") from e
    return f"workdir {workdir}: writable"


@dataclasses.dataclass
class Report:
    config: RunConfig
    mesh: dict[str, int]
    notes: list[str]


def preflight(
    config: str,
    overrides: Sequence[str],
    accelerator: Accelerator | None,
    workdir: str,
    *,
    dry_run: bool = False,
    remote_workdir: bool = False,
) -> Report:
    """All checks, in order of cost; raises ``PreflightError`` at the first failure.

    ``accelerator`` None skips the mesh and batch checks (a local job on real devices). ``remote_workdir``
    says the (local-looking) path names a directory on other machines, so it is not probed from here.
    """
    cfg = load_config(config, overrides)
    notes = [f"config {config} resolves ({len(overrides)} override(s))"]
    mesh: dict[str, int] = {}
    if accelerator is None:
        notes.append("mesh and batch split not checked: the device count is known only inside the job")
    else:
        mesh = resolve_mesh(cfg, accelerator)
        check_batch(cfg, mesh, accelerator)
        per_process = cfg.train.batch_size // accelerator.num_processes
        notes += [
            f"mesh on {accelerator.name} ({accelerator.num_devices} devices, {accelerator.num_processes} "
            "processes): " + " x ".join(f"{k}={v}" for k, v in mesh.items()),
            f"train.batch_size={cfg.train.batch_size}: {per_process} rows per process",
        ]
    notes.append(check_workdir(workdir, dry_run=dry_run, remote=remote_workdir))
    return Report(cfg, mesh, notes)


def aot_check(
    config: str,
    overrides: Sequence[str],
    accelerator_type: str,
    num_slices: int = 1,
    *,
    run: Callable[..., subprocess.CompletedProcess] = subprocess.run,
) -> str:
    """Compiles the run for the slice on this machine (``python -m xlmp_jax.aot``) and returns its verdict
    line (``fits: ...``); a layout that does not fit, or a compile that fails, is a ``PreflightError``.

    A subprocess, as the launcher must not start a JAX backend of its own (it would claim this machine's
    GPUs); it runs in dry runs too, since it creates nothing. Large takes a few minutes on 2 cores.
    """
    cmd = [sys.executable, "-m", "xlmp_jax.aot", f"--config={config}", f"--topology={accelerator_type}"]
    cmd += [f"--num_slices={num_slices}", *overrides]
    proc = run(cmd, cwd=str(REPO_ROOT), capture_output=True, text=True)
    lines = [line for line in (proc.stdout or "").splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    if proc.returncode == 0 and last.startswith("fits:"):
        return last
    if proc.returncode == 3:
        raise PreflightError(f"the compile check says the run {last or 'does not fit'} ({shlex.join(cmd)})")
    detail = ((proc.stderr or "").strip().splitlines() or [last or "no output"])[-1]
    raise PreflightError(f"the compile check failed (exit {proc.returncode}): {detail} ({shlex.join(cmd)})")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m launch.preflight", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--accelerator", default="", help="a TPU type (v4-32); or use --nodes/--gpus_per_node")
    parser.add_argument("--num_slices", type=int, default=1)
    parser.add_argument("--nodes", type=int, default=0, help="GPU nodes")
    parser.add_argument("--gpus_per_node", type=int, default=8)
    parser.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true")
    parser.add_argument("--aot", action="store_true", help="also compile the run for the TPU type (xlmp_jax.aot)")
    args, extra = parser.parse_known_args(argv)
    try:
        if args.accelerator:
            accel = tpu_accelerator(args.accelerator, args.num_slices)
        elif args.nodes:
            accel = gpu_accelerator(args.nodes, args.gpus_per_node)
        else:
            raise PreflightError("pass --accelerator=<TPU type> or --nodes=N [--gpus_per_node=G]")
        overrides = split_overrides(extra)
        if args.accelerator:
            overrides = layouts.layout_overrides(args.config, args.accelerator, overrides) + overrides
        report = preflight(args.config, overrides, accel, args.workdir, dry_run=args.dry_run)
        if args.aot:
            if not args.accelerator:
                raise PreflightError("--aot compiles for a TPU type: pass --accelerator=<TPU type>")
            report.notes.append(aot_check(args.config, overrides, args.accelerator, args.num_slices))
    except LaunchError as e:
        print(f"preflight failed: {e}", file=sys.stderr)
        return 2
    for note in report.notes:
        print(f"ok: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
