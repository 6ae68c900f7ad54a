"""Runs an N-process training job on this machine: the rehearsal of a pod, with CPU devices per process.

    python -m launch.local --num_processes=2 --devices_per_process=4 \\
        --config=configs/tiny.py --workdir=workdirs/rehearsal --config.train.steps=20

Each process is ``python -m xlmp_jax.train ... --coordinator_address=localhost:PORT --num_processes=N
--process_id=I`` with ``XLMP_NUM_CPU_DEVICES=K`` (a free port is picked). Their output is prefixed with
``[pI]``; if one dies the others get SIGTERM (they checkpoint and exit), then SIGKILL after a grace
period; the launcher's exit code is the first failure's. Ctrl-C / SIGTERM is passed on the same way.
``supervise`` is reused by ``launch.multinode`` for ssh sessions.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence

from launch import accelerators, command_line, preflight
from launch.command_line import LaunchError

_DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"


@dataclasses.dataclass
class Proc:
    name: str  # output prefix, e.g. "p0" or "host-a/p3"
    argv: list[str]
    env: dict[str, str] | None = None  # the full environment (None = inherit)
    cwd: str | None = None


def free_port() -> int:
    """A TCP port nobody listens on right now (the coordinator binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def child_env(devices_per_process: int | None, extra: Mapping[str, str] = ()) -> dict[str, str]:
    """This environment for a trainer process; with CPU devices, forced to the CPU platform (JAX and TF).

    A ``--xla_force_host_platform_device_count`` inherited in ``XLA_FLAGS`` (pytest's conftest sets 8) is
    removed, so ``XLMP_NUM_CPU_DEVICES`` alone decides the device count.
    """
    env = dict(os.environ)
    if devices_per_process:
        if "XLA_FLAGS" in env:
            env["XLA_FLAGS"] = " ".join(f for f in env["XLA_FLAGS"].split() if not f.startswith(_DEVICE_COUNT_FLAG))
        env["XLMP_NUM_CPU_DEVICES"] = str(devices_per_process)
        env["JAX_PLATFORMS"] = "cpu"
        env["CUDA_VISIBLE_DEVICES"] = ""  # nor may TensorFlow's input pipeline claim a GPU
    env["PYTHONUNBUFFERED"] = "1"  # lines reach the prefixer as they are printed
    env.update(extra)
    return env


def _exit_code(rc: int) -> int:
    return 128 - rc if rc < 0 else rc  # killed by signal N -> 128 + N, as shells report it


def supervise(procs: Sequence[Proc], *, log_dir: str | None = None, grace_s: float = 30.0, out=None) -> int:
    """Starts ``procs``, prefixes their merged output, and stops them all once one fails.

    Returns 0 when every process exits 0, else the exit code of the first one that failed. With
    ``log_dir``, each process's output also goes to ``log_dir/<name>.log``.
    """
    out = out if out is not None else sys.stdout
    lock = threading.Lock()
    if log_dir:
        os.makedirs(log_dir, exist_ok=True)
    running: list[subprocess.Popen] = []
    threads = []
    try:
        for p in procs:
            popen = subprocess.Popen(
                p.argv,
                env=p.env,
                cwd=p.cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                bufsize=1,
            )
            running.append(popen)
            log = open(os.path.join(log_dir, p.name.replace("/", "_") + ".log"), "w") if log_dir else None  # noqa: SIM115
            t = threading.Thread(target=_pump, args=(popen, p.name, out, lock, log), daemon=True)
            t.start()
            threads.append(t)
    except OSError as e:  # e.g. the interpreter is missing: do not leave the started ones behind
        for popen in running:
            popen.kill()
            popen.wait()
        raise LaunchError(f"cannot start {p.argv[0]!r} for {p.name}: {e}") from e

    stop = threading.Event()

    def on_signal(signum, frame):  # noqa: ARG001
        stop.set()

    handlers = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            handlers[sig] = signal.signal(sig, on_signal)
    first_failure: int | None = None
    kill_at: float | None = None
    try:
        while any(p.poll() is None for p in running):
            failed = [
                (p.name, r.returncode) for p, r in zip(procs, running, strict=True) if r.returncode not in (None, 0)
            ]
            if (failed or stop.is_set()) and kill_at is None:
                if failed:
                    name, rc = failed[0]
                    first_failure = _exit_code(rc)
                    with lock:
                        print(f"[launch] {name} exited with {rc}; stopping the others", file=out, flush=True)
                for p in running:
                    if p.poll() is None:
                        p.send_signal(signal.SIGTERM)
                kill_at = time.monotonic() + grace_s
            if kill_at is not None and time.monotonic() > kill_at:
                for p in running:
                    if p.poll() is None:
                        p.kill()
            time.sleep(0.1)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        for p in running:
            if p.poll() is None:
                p.kill()
            p.wait()
        for t in threads:
            t.join(timeout=5)
    if first_failure is None:
        codes = [_exit_code(p.returncode) for p in running if p.returncode]
        first_failure = codes[0] if codes else (130 if stop.is_set() else 0)
    if first_failure:
        summary = ", ".join(f"{p.name}={r.returncode}" for p, r in zip(procs, running, strict=True))
        print(f"[launch] exit codes: {summary}", file=out, flush=True)
    return first_failure


def _pump(popen: subprocess.Popen, name: str, out, lock: threading.Lock, log) -> None:
    for line in popen.stdout:
        with lock:
            out.write(f"[{name}] {line}")
            out.flush()
        if log:
            log.write(line)
            log.flush()
    if log:
        log.close()


def build_procs(
    config: str,
    workdir: str,
    overrides: Sequence[str],
    *,
    num_processes: int,
    devices_per_process: int | None,
    port: int,
    python: str = sys.executable,
    env: Mapping[str, str] = (),
) -> list[Proc]:
    """One ``Proc`` per process: the train command with the localhost coordinator and its process id."""
    if "://" not in workdir:
        workdir = os.path.abspath(workdir)  # the processes run from the repository root
    procs = []
    for i in range(num_processes):
        argv = command_line.train_command(
            command_line.config_argument(config),
            workdir,
            overrides,
            python=python,
            coordinator_address=f"localhost:{port}",
            num_processes=num_processes,
            process_id=i,
        )
        procs.append(Proc(f"p{i}", argv, child_env(devices_per_process, dict(env)), str(command_line.REPO_ROOT)))
    return procs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m launch.local", description=__doc__.split("\n")[0])
    command_line.add_common_flags(parser)
    parser.add_argument("--num_processes", type=int, default=2)
    parser.add_argument(
        "--devices_per_process", type=int, default=0, help="CPU devices per process (XLMP_NUM_CPU_DEVICES); 0 = real"
    )
    parser.add_argument("--port", type=int, default=0, help="coordinator port (0 = a free one)")
    parser.add_argument("--log_dir", default="", help="also write each process's output to LOG_DIR/p<i>.log")
    parser.add_argument("--grace_s", type=float, default=30.0, help="seconds between SIGTERM and SIGKILL")
    parser.add_argument("--python", default=sys.executable)
    args, extra = parser.parse_known_args(argv)
    runner = command_line.Runner(dry_run=args.dry_run)
    try:
        overrides = command_line.split_overrides(extra)
        env = command_line.parse_env(args.env)
        if not args.skip_preflight:
            # Without simulated CPU devices the device count is only known inside the job: check the rest.
            accel = (
                accelerators.cpu_accelerator(args.num_processes, args.devices_per_process)
                if args.devices_per_process
                else None
            )
            report = preflight.preflight(args.config, overrides, accel, args.workdir, dry_run=args.dry_run)
            for note in report.notes:
                runner.note(f"preflight ok: {note}")
        procs = build_procs(
            args.config,
            args.workdir,
            overrides,
            num_processes=args.num_processes,
            devices_per_process=args.devices_per_process or None,
            port=args.port or free_port(),
            python=args.python,
            env=env,
        )
    except LaunchError as e:
        print(f"launch.local: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        runner.note(f"each command runs from {command_line.REPO_ROOT}, all at once")
        for p in procs:
            changed = {k: v for k, v in (p.env or {}).items() if os.environ.get(k) != v}
            runner.run(command_line.with_env(p.argv, changed))
        return 0
    try:
        return supervise(procs, log_dir=args.log_dir or None, grace_s=args.grace_s)
    except LaunchError as e:
        print(f"launch.local: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
