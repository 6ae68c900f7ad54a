"""Plain multi-node launcher for clusters without SLURM: per-node commands with coordinator, count and id.

Three ways to use it (the job is the same ``python -m xlmp_jax.train`` everywhere):

* print the plan -- one command per node, to paste or to feed to pdsh / a job system::

      python -m launch.multinode --num_nodes=2 --coordinator=10.0.0.1:8476 --config=configs/base.py \\
          --workdir=/shared/xlmp/base

* run node R's share here (the same line on every node, with its own ``--node_rank``)::

      python -m launch.multinode --num_nodes=2 --coordinator=10.0.0.1:8476 --node_rank=$RANK ...

* start every node over ssh from one machine (output prefixed per host; if one fails the rest are
  stopped)::

      python -m launch.multinode --hosts=gpu-a,gpu-b --config=configs/base.py --workdir=/shared/xlmp/base

Process ``i`` of node ``r`` gets ``--process_id = r * procs_per_node + i``. With several processes per
node (one per GPU), process ``i`` sees GPU ``i`` through ``JAX_LOCAL_DEVICE_IDS``. The coordinator is
node 0 (``--coordinator`` = its address as the other nodes reach it; with ``--hosts``, the first host and
``--port``). The repository must be at ``--repo_dir`` on every node, and the work directory shared.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence

from launch import accelerators, command_line, preflight
from launch.command_line import LaunchError
from launch.local import Proc, supervise


def node_commands(args: argparse.Namespace, overrides: Sequence[str], node_rank: int) -> list[list[str]]:
    """The argv of each process of node ``node_rank`` (run from ``--repo_dir``)."""
    ppn = args.procs_per_node
    total = args.num_nodes * ppn
    out = []
    for local in range(ppn):
        env = command_line.parse_env(args.env)
        if args.devices_per_process:
            env["XLMP_NUM_CPU_DEVICES"] = str(args.devices_per_process)
        elif ppn > 1:
            env["JAX_LOCAL_DEVICE_IDS"] = str(local)
        cmd = command_line.train_command(
            command_line.config_argument(args.config),
            args.workdir,
            overrides,
            python=args.python,
            coordinator_address=args.coordinator,
            num_processes=total,
            process_id=node_rank * ppn + local,
        )
        out.append(command_line.with_env(cmd, env))
    return out


def ssh_command(args: argparse.Namespace, host: str, cmd: Sequence[str]) -> list[str]:
    """``ssh HOST 'cd REPO && CMD'``: the remote shell sees one quoted command line."""
    remote = f"cd {shlex.quote(args.repo_dir)} && exec {shlex.join(cmd)}"
    return [*shlex.split(args.ssh), host, remote]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m launch.multinode", description=__doc__.split("\n")[0])
    command_line.add_common_flags(parser)
    parser.add_argument("--hosts", default="", help="comma-separated hosts to start over ssh (node 0 first)")
    parser.add_argument("--num_nodes", type=int, default=0, help="number of nodes (without --hosts)")
    parser.add_argument("--coordinator", default="", help="HOST:PORT of node 0 as every node reaches it")
    parser.add_argument("--port", type=int, default=8476, help="coordinator port with --hosts")
    parser.add_argument("--node_rank", type=int, default=-1, help="run this node's processes here")
    parser.add_argument("--procs_per_node", type=int, default=1, help="processes per node (e.g. one per GPU)")
    parser.add_argument("--devices_per_process", type=int, default=0, help="simulate K CPU devices per process")
    parser.add_argument("--gpus_per_node", type=int, default=0, help="for preflight: devices per node")
    parser.add_argument("--repo_dir", default=str(command_line.REPO_ROOT), help="the repository on every node")
    parser.add_argument("--python", default=".venv/bin/python", help="interpreter, relative to --repo_dir or absolute")
    parser.add_argument("--ssh", default="ssh -o BatchMode=yes", help="ssh command with its options")
    parser.add_argument("--grace_s", type=float, default=30.0, help="seconds between SIGTERM and SIGKILL")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args, extra = build_parser().parse_known_args(argv)
    runner = command_line.Runner(dry_run=args.dry_run)
    try:
        overrides = command_line.split_overrides(extra)
        hosts = [h for h in args.hosts.split(",") if h]
        if hosts:
            if args.num_nodes and args.num_nodes != len(hosts):
                raise LaunchError(f"--num_nodes={args.num_nodes} but --hosts names {len(hosts)} hosts")
            args.num_nodes = len(hosts)
            args.coordinator = args.coordinator or f"{hosts[0]}:{args.port}"
        if args.num_nodes < 1:
            raise LaunchError(f"--num_nodes={args.num_nodes}: pass --hosts=a,b,... or --num_nodes=N")
        if args.procs_per_node < 1:
            raise LaunchError(f"--procs_per_node={args.procs_per_node} must be >= 1")
        host_part, _, port = args.coordinator.rpartition(":")
        if not host_part or not port.isdigit():
            raise LaunchError(f"--coordinator={args.coordinator!r} is not HOST:PORT")
        if not -1 <= args.node_rank < args.num_nodes:
            raise LaunchError(f"--node_rank={args.node_rank} is not in [0, {args.num_nodes})")
        if not args.skip_preflight:
            per_node = args.devices_per_process * args.procs_per_node or args.gpus_per_node
            accel = None
            if per_node:
                accel = accelerators.Accelerator(
                    f"{args.num_nodes} nodes x {per_node} devices",
                    args.num_nodes * per_node,
                    args.num_nodes,
                    args.num_nodes * args.procs_per_node,
                )
            # Started over ssh, a local-looking workdir names a directory on the hosts.
            report = preflight.preflight(
                args.config, overrides, accel, args.workdir, dry_run=args.dry_run, remote_workdir=bool(hosts)
            )
            for note in report.notes:
                runner.note(f"preflight ok: {note}")
    except LaunchError as e:
        print(f"launch.multinode: {e}", file=sys.stderr)
        return 2

    if hosts:
        cmds = [ssh_command(args, h, c) for r, h in enumerate(hosts) for c in node_commands(args, overrides, r)]
        if args.dry_run:
            for c in cmds:
                runner.run(c)
            return 0
        names = [f"{h}/p{r * args.procs_per_node + i}" for r, h in enumerate(hosts) for i in range(args.procs_per_node)]
        return _supervise([Proc(n, c) for n, c in zip(names, cmds, strict=True)], args.grace_s)

    if args.node_rank < 0 or args.dry_run:
        # The plan (with --dry-run and --node_rank: that node's part of it), one line per process.
        for r in range(args.num_nodes) if args.node_rank < 0 else [args.node_rank]:
            print(f"# node {r}", flush=True)
            for c in node_commands(args, overrides, r):
                print(f"cd {shlex.quote(args.repo_dir)} && {shlex.join(c)}", flush=True)
        return 0
    procs = [
        Proc(f"node{args.node_rank}/p{i}", c, cwd=args.repo_dir)
        for i, c in enumerate(node_commands(args, overrides, args.node_rank))
    ]
    return _supervise(procs, args.grace_s)


def _supervise(procs: Sequence[Proc], grace_s: float) -> int:
    try:
        return supervise(procs, grace_s=grace_s)
    except LaunchError as e:
        print(f"launch.multinode: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
