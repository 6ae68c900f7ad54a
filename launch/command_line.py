"""What every launcher shares: the train command line, config overrides, and printing or running commands.

A launcher builds argv lists (never shell strings) and hands them to ``Runner``: with ``--dry-run`` it
prints each one ``shlex``-quoted, exactly as it would run it, and runs nothing; otherwise it echoes it to
stderr and runs it. Commands that run on a remote shell (``gcloud ... ssh --command=...``, ``ssh host
CMD``) are built with ``shlex.join`` too, so a work directory with spaces or quotes survives both shells.
"""

from __future__ import annotations

import pathlib
import re
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
TRAIN_MODULE = "xlmp_jax.train"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class LaunchError(ValueError):
    """A launch that cannot go ahead; the message names the flag and the value."""


class PreflightError(LaunchError):
    """A launch that would fail (or waste the allocation); the message names the value."""


def split_overrides(extra: Sequence[str]) -> list[str]:
    """The arguments argparse did not know -> ``--config.x=v`` overrides for the trainer.

    ``--config.train.steps 100`` (two words) is joined into ``--config.train.steps=100``; anything that
    is not a ``--config.`` override is an error naming it (a typo in a launcher flag must not be
    silently forwarded to a job that costs money).
    """
    out: list[str] = []
    items = list(extra)
    i = 0
    while i < len(items):
        item = items[i]
        if not item.startswith("--config."):
            raise LaunchError(
                f"unrecognised argument {item!r}: launcher flags are listed by --help, and trainer config "
                "overrides look like --config.train.steps=100"
            )
        if "=" not in item:
            if i + 1 < len(items) and not items[i + 1].startswith("--"):
                item = f"{item}={items[i + 1]}"
                i += 1
            else:
                raise LaunchError(f"config override {item!r} has no value (write {item}=VALUE)")
        out.append(item)
        i += 1
    return out


def parse_env(items: Sequence[str]) -> dict[str, str]:
    """``--env KEY=VALUE`` flags -> a dict; a malformed one is an error naming it."""
    env: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not _ENV_NAME.fullmatch(name):
            raise LaunchError(f"--env {item!r} is not KEY=VALUE with a valid variable name")
        env[name] = value
    return env


def config_argument(config: str) -> str:
    """The config path as a command run from the repository root names it.

    A file inside this repository becomes repo-relative (``configs/base.py``), so the same command works
    on a worker whose copy of the repo lives elsewhere; a file outside it stays as given (absolute).
    """
    path, sep, arg = config.partition(":")
    full = pathlib.Path(path).resolve()
    try:
        path = str(full.relative_to(REPO_ROOT))
    except ValueError:
        path = str(full)
    return path + sep + arg


def train_command(
    config: str,
    workdir: str,
    overrides: Sequence[str] = (),
    *,
    python: str = "python",
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> list[str]:
    """The train CLI's command line: ``python -m xlmp_jax.train --config=... --workdir=... [overrides]
    [distributed flags]``."""
    cmd = [python, "-m", TRAIN_MODULE, f"--config={config}", f"--workdir={workdir}", *overrides]
    if coordinator_address is not None:
        cmd += [
            f"--coordinator_address={coordinator_address}",
            f"--num_processes={num_processes}",
            f"--process_id={process_id}",
        ]
    return cmd


def with_env(cmd: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """``env K=V ... cmd`` (so one argv carries its environment through ssh and srun)."""
    return (["env", *(f"{k}={v}" for k, v in env.items())] if env else []) + list(cmd)


def remote_path(path: str) -> str:
    """A shell word for ``path`` on a remote host: relative paths are taken from ``$HOME``, quoted safely."""
    if path.startswith("/"):
        return shlex.quote(path)
    return '"$HOME"/' + shlex.quote(path)


class Runner:
    """Prints (``dry_run``) or echoes and runs argv lists; the one place a launcher executes anything."""

    def __init__(self, dry_run: bool, out=None):
        self.dry_run = dry_run
        self.out = out if out is not None else sys.stdout

    def note(self, text: str) -> None:
        """A comment line: in dry-run output it reads as a shell comment, so the output stays a script."""
        stream = self.out if self.dry_run else sys.stderr
        for line in text.splitlines() or [""]:
            print(f"# {line}", file=stream, flush=True)

    def run(self, cmd: Sequence[str], *, check: bool = True, capture: bool = False) -> subprocess.CompletedProcess:
        """Runs ``cmd`` (or only prints it in dry-run mode and returns a fake success)."""
        line = shlex.join(cmd)
        if self.dry_run:
            print(line, file=self.out, flush=True)
            return subprocess.CompletedProcess(list(cmd), 0, stdout="", stderr="")
        print(f"+ {line}", file=sys.stderr, flush=True)
        try:
            result = subprocess.run(list(cmd), check=False, text=True, capture_output=capture)
        except FileNotFoundError as e:
            raise LaunchError(f"{cmd[0]!r} is not installed or not on PATH ({e})") from e
        if check and result.returncode:
            detail = f": {result.stderr.strip()}" if capture and result.stderr else ""
            raise LaunchError(f"command failed with exit code {result.returncode}: {line}{detail}")
        return result


def add_common_flags(parser, *, dry_run_flag: bool = True) -> None:
    """Flags every launcher has: the config, the work directory, env, dry-run and preflight switches."""
    parser.add_argument("--config", required=True, help="run config, e.g. configs/base.py (configs/x.py:arg works)")
    parser.add_argument("--workdir", required=True, help="checkpoints, metrics and TensorBoard go here")
    parser.add_argument(
        "--env", action="append", default=[], metavar="KEY=VALUE", help="extra environment for the trainer"
    )
    if dry_run_flag:
        parser.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true", help="print, run nothing")
    parser.add_argument("--skip_preflight", action="store_true", help="do not check config, mesh and workdir")
