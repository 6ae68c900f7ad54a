"""One Cloud TPU VM (or queued resource) through gcloud: the exact commands, and the actions that run them.

``Tpu`` builds every gcloud command and worker script as a pure function of the parsed flags (so
``--dry-run`` prints exactly what a real run executes) and runs them through a ``Runner``: ``create``
(reuse the TPU if ``describe`` finds it), ``install`` (pack this repo, ``tpu-vm scp`` it to every worker,
venv + ``pip install``), ``start`` (``nohup`` the trainer on all workers), ``logs``, ``stop`` (SIGTERM),
``delete``. The CLI that strings them together is ``launch.tpu``.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
import time
from collections.abc import Sequence

from launch.command_line import (
    REPO_ROOT,
    LaunchError,
    Runner,
    config_argument,
    parse_env,
    remote_path,
    train_command,
    with_env,
)

# TPU software versions for the generations (Cloud TPU docs, "TPU software versions"); --runtime_version overrides.
DEFAULT_RUNTIME = {
    "v2": "tpu-ubuntu2204-base",
    "v3": "tpu-ubuntu2204-base",
    "v4": "tpu-ubuntu2204-base",
    "v5p": "v2-alpha-tpuv5",
    "v5litepod": "v2-alpha-tpuv5-lite",
    "v5e": "v2-alpha-tpuv5-lite",
    "v6e": "v2-alpha-tpuv6e",
}
TARBALL = "xlmp.tar.gz"  # on each worker, in $HOME
# Left out of the tarball: environments, caches and runs (the workers build their own .venv).
TAR_EXCLUDES = (
    "./.venv",
    "./workdirs",
    "./evals",
    "./exports",
    "./.pytest_cache",
    "./.ruff_cache",
    "__pycache__",
    "*.pyc",
)
_NAME = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")


def jax_requirement() -> str:
    """``jax[tpu]`` pinned to requirements.txt's jax version, so every worker runs what the tests ran."""
    text = (REPO_ROOT / "requirements.txt").read_text()
    m = re.search(r"^jax==([^\s#]+)", text, re.M)
    return f"jax[tpu]=={m.group(1)}" if m else "jax[tpu]"


class Tpu:
    """The gcloud commands for one TPU (or queued resource) named ``args.name``."""

    def __init__(self, args: argparse.Namespace, runner: Runner):
        self.args = args
        self.runner = runner
        if not _NAME.fullmatch(args.name):
            raise LaunchError(f"--name={args.name!r}: use lower-case letters, digits and '-', starting with a letter")
        if args.num_slices < 1:
            raise LaunchError(f"--num_slices={args.num_slices} must be >= 1")
        self.queued = args.queued or args.num_slices > 1
        self.nodes = [args.name] if args.num_slices == 1 else [f"{args.name}-{i}" for i in range(args.num_slices)]

    # --- command builders (pure) ---
    def location(self) -> list[str]:
        flags = [f"--zone={self.args.zone}"]
        if self.args.project:
            flags.append(f"--project={self.args.project}")
        return flags

    def describe_cmd(self) -> list[str]:
        if self.queued:
            kind, fmt = "queued-resources", "value(state.state)"
        else:
            kind, fmt = "tpu-vm", "value(state)"
        return ["gcloud", "compute", "tpus", kind, "describe", self.args.name, *self.location(), f"--format={fmt}"]

    def create_cmd(self) -> list[str]:
        a = self.args
        gen = a.accelerator_type.split("-")[0]
        runtime = a.runtime_version or DEFAULT_RUNTIME.get(gen)
        if not runtime:
            raise LaunchError(f"no default runtime for --accelerator_type={a.accelerator_type}: pass --runtime_version")
        capacity = ["--spot"] if a.spot else ["--reserved"] if a.reserved else []
        if not self.queued:
            return [
                "gcloud", "compute", "tpus", "tpu-vm", "create", a.name, *self.location(),
                f"--accelerator-type={a.accelerator_type}", f"--version={runtime}", *capacity,
            ]  # fmt: skip
        nodes = (
            [f"--node-id={a.name}"]
            if a.num_slices == 1
            else [f"--node-count={a.num_slices}", f"--node-prefix={a.name}"]
        )
        return [
            "gcloud", "compute", "tpus", "queued-resources", "create", a.name, *nodes, *self.location(),
            f"--accelerator-type={a.accelerator_type}", f"--runtime-version={runtime}", *capacity,
        ]  # fmt: skip

    def delete_cmds(self) -> list[list[str]]:
        if self.queued:  # --force also deletes the TPU VMs the queued resource created
            return [
                [
                    "gcloud",
                    "compute",
                    "tpus",
                    "queued-resources",
                    "delete",
                    self.args.name,
                    *self.location(),
                    "--force",
                    "--quiet",
                ]
            ]
        return [["gcloud", "compute", "tpus", "tpu-vm", "delete", n, *self.location(), "--quiet"] for n in self.nodes]

    def ssh_cmd(self, node: str, command: str, worker: str = "all") -> list[str]:
        return [
            "gcloud",
            "compute",
            "tpus",
            "tpu-vm",
            "ssh",
            node,
            *self.location(),
            f"--worker={worker}",
            f"--command={command}",
        ]

    def scp_cmd(self, node: str, local: str, remote: str) -> list[str]:
        return [
            "gcloud",
            "compute",
            "tpus",
            "tpu-vm",
            "scp",
            local,
            f"{node}:{remote}",
            *self.location(),
            "--worker=all",
        ]

    def tarball(self) -> str:
        return f"/tmp/xlmp-{self.args.name}.tar.gz"

    def pack_cmd(self) -> list[str]:
        excludes = [f"--exclude={e}" for e in TAR_EXCLUDES]
        return ["tar", "-czf", self.tarball(), "--exclude-vcs", *excludes, "-C", str(REPO_ROOT), "."]

    def log_file(self) -> str:
        return remote_path(f"{self.args.log_dir}/train.log")

    def pid_file(self) -> str:
        return remote_path(f"{self.args.log_dir}/train.pid")

    def install_script(self) -> str:
        a = self.args
        repo = remote_path(a.remote_dir)
        if a.git_url:
            fetch = (
                f"if [ -d {repo}/.git ]; then git -C {repo} fetch --quiet origin {shlex.quote(a.git_ref)} && "
                f"git -C {repo} checkout --quiet --force FETCH_HEAD; else git clone --quiet {shlex.quote(a.git_url)} "
                f"{repo} && git -C {repo} checkout --quiet {shlex.quote(a.git_ref)}; fi"
            )
        else:  # unpacked over the old copy, so an existing .venv is reused
            fetch = f"mkdir -p {repo} && tar -xzf {remote_path(TARBALL)} -C {repo}"
        py = shlex.quote(a.python)
        return "\n".join(
            [
                "set -e",
                fetch,
                f"cd {repo}",
                f"if ! command -v {py} >/dev/null; then sudo apt-get update -qq && "
                f"sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq {py} {py}-venv; fi",
                f"[ -x .venv/bin/python ] || {py} -m venv .venv",
                ".venv/bin/pip install --quiet --upgrade pip",
                f".venv/bin/pip install --quiet -r requirements.txt -e . {shlex.quote(jax_requirement())}",
                'echo "xlmp: installed on $(hostname)"',
            ]
        )

    def start_script(self, overrides: Sequence[str]) -> str:
        a = self.args
        train = train_command(config_argument(a.config), a.workdir, overrides, python=".venv/bin/python")
        train = with_env(train, parse_env(a.env))
        log, pid = self.log_file(), self.pid_file()
        return "\n".join(
            [
                "set -e",
                f"mkdir -p {remote_path(a.log_dir)}",
                f"cd {remote_path(a.remote_dir)}",
                f'if [ -f {pid} ] && kill -0 "$(cat {pid})" 2>/dev/null; then echo "xlmp: already training on '
                f'$(hostname) (pid $(cat {pid})); run stop first" >&2; exit 1; fi',
                f'echo "=== xlmp start $(date -u +%FT%TZ) on $(hostname)" >> {log}',
                f"nohup {shlex.join(train)} >> {log} 2>&1 < /dev/null &",
                f"echo $! > {pid}",
                'echo "xlmp: started pid $! on $(hostname)"',
            ]
        )

    def stop_script(self) -> str:
        pid = self.pid_file()
        return (
            f'if [ -f {pid} ] && kill -0 "$(cat {pid})" 2>/dev/null; then kill -TERM "$(cat {pid})" && '
            f'echo "xlmp: SIGTERM sent to pid $(cat {pid}) on $(hostname): it checkpoints, then exits"; '
            'else echo "xlmp: nothing running on $(hostname)"; fi'
        )

    # --- actions ---
    def create(self) -> None:
        """Reuses the TPU if ``describe`` finds it, else creates it (and waits for a queued resource)."""
        describe = self.describe_cmd()
        if self.runner.dry_run:
            self.runner.run(describe)
            self.runner.note("only if the describe above fails (no such TPU):")
            self.runner.run(self.create_cmd())
            if self.queued:
                self.runner.note("then repeat the describe every 30 s until the state is ACTIVE")
            return
        found = self.runner.run(describe, check=False, capture=True)
        state = found.stdout.strip()
        if found.returncode == 0 and state in ("PREEMPTED", "TERMINATED", "FAILED", "SUSPENDED"):
            raise LaunchError(f"{self.args.name} exists but is {state}: run `delete` first, then `up` again")
        if found.returncode == 0:
            print(f"[launch] reusing {self.args.name} (state {state or '?'})", file=sys.stderr)
        else:
            self.runner.run(self.create_cmd())
        if self.queued:
            self.wait_active()

    def wait_active(self) -> None:
        deadline = time.monotonic() + self.args.wait_minutes * 60
        while True:
            state = self.runner.run(self.describe_cmd(), capture=True).stdout.strip()
            if state == "ACTIVE":
                return
            if state in ("FAILED", "SUSPENDED"):
                raise LaunchError(
                    f"queued resource {self.args.name} is {state}: see `gcloud compute tpus queued-resources describe`"
                )
            if time.monotonic() > deadline:
                raise LaunchError(
                    f"queued resource {self.args.name} still {state} after --wait_minutes={self.args.wait_minutes}"
                )
            print(f"[launch] {self.args.name}: {state}; waiting", file=sys.stderr, flush=True)
            time.sleep(30)

    def install(self) -> None:
        if not self.args.git_url:
            self.runner.run(self.pack_cmd())
        for node in self.nodes:
            if not self.args.git_url:
                self.runner.run(self.scp_cmd(node, self.tarball(), TARBALL))
            self.runner.run(self.ssh_cmd(node, self.install_script()))

    def start(self, overrides: Sequence[str]) -> None:
        for node in self.nodes:
            self.runner.run(self.ssh_cmd(node, self.start_script(overrides)))

    def logs(self, worker: str = "0") -> None:
        cmd = self.ssh_cmd(self.nodes[0], f"tail -n +1 -F {self.log_file()}", worker=worker)
        try:
            self.runner.run(cmd, check=False)
        except KeyboardInterrupt:
            print("\n[launch] stopped watching; training goes on (`stop` ends it)", file=sys.stderr)

    def stop(self) -> None:
        for node in self.nodes:
            self.runner.run(self.ssh_cmd(node, self.stop_script()))

    def delete(self) -> None:
        for cmd in self.delete_cmds():
            self.runner.run(cmd)
