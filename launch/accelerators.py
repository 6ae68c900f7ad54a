"""The devices a job runs on: how many JAX devices, hosts and processes an accelerator type gives.

Device counts (one JAX device per chip on v4 and later, per TensorCore on v2/v3):

========================  =========================  ===============
accelerator type          devices (= JAX devices)    hosts (workers)
========================  =========================  ===============
``v2-N`` / ``v3-N``       N cores                    N / 8
``v4-N`` / ``v5p-N``      N / 2 chips                chips / 4 (min 1)
``v5litepod-N``, ``v6e-N``  N chips                  1 for N <= 8, else N / 4
GPU                       nodes x gpus_per_node      nodes
========================  =========================  ===============

So v4-32 = 16 chips on 4 hosts; v5p-16 = 8 chips on 2 hosts; v5litepod-16 = 16 chips on 4 hosts. A bad
type or count is a ``PreflightError`` naming the flag. The checks that use these counts are ``launch.preflight``.
"""

from __future__ import annotations

import dataclasses
import re

from launch.command_line import PreflightError

_V5E_V6E_SIZES = (1, 4, 8, 16, 32, 64, 128, 256)


@dataclasses.dataclass(frozen=True)
class Accelerator:
    """The devices a job runs on: how many, over how many hosts and processes."""

    name: str  # e.g. "v4-32", "2 nodes x 8 GPUs", "2 processes x 4 CPU devices"
    num_devices: int  # JAX devices in the whole job (all slices)
    num_hosts: int  # machines (all slices)
    num_processes: int  # JAX processes (one per host on TPU)
    num_slices: int = 1

    @property
    def devices_per_process(self) -> int:
        return self.num_devices // self.num_processes


def tpu_accelerator(accelerator_type: str, num_slices: int = 1) -> Accelerator:
    """Devices and hosts of ``num_slices`` Cloud TPU slices of ``accelerator_type`` (table in the module doc)."""
    m = re.fullmatch(r"(v2|v3|v4|v5p|v5litepod|v5e|v6e)-(\d+)", accelerator_type)
    if not m:
        raise PreflightError(
            f"--accelerator_type={accelerator_type!r} is not a known TPU type "
            "(expected v2-N, v3-N, v4-N, v5p-N, v5litepod-N or v6e-N, e.g. v4-32)"
        )
    if num_slices < 1:
        raise PreflightError(f"--num_slices={num_slices} must be >= 1")
    gen, n = m.group(1), int(m.group(2))
    if gen in ("v2", "v3"):
        if n % 8:
            raise PreflightError(f"--accelerator_type={accelerator_type}: {gen} slices have a multiple of 8 cores")
        devices, hosts = n, n // 8
    elif gen in ("v4", "v5p"):
        if n % 8:
            raise PreflightError(
                f"--accelerator_type={accelerator_type}: {gen}-N counts TensorCores (2 per chip, 4 chips per "
                "host), so N is a multiple of 8"
            )
        devices = n // 2
        hosts = max(1, devices // 4)
    else:
        if n not in _V5E_V6E_SIZES:
            raise PreflightError(
                f"--accelerator_type={accelerator_type}: {gen} slices have {', '.join(map(str, _V5E_V6E_SIZES))} chips"
            )
        devices = n
        hosts = 1 if n <= 8 else n // 4
    return Accelerator(
        name=accelerator_type if num_slices == 1 else f"{num_slices} x {accelerator_type}",
        num_devices=devices * num_slices,
        num_hosts=hosts * num_slices,
        num_processes=hosts * num_slices,
        num_slices=num_slices,
    )


def gpu_accelerator(nodes: int, gpus_per_node: int, process_per: str = "gpu") -> Accelerator:
    """``nodes`` machines with ``gpus_per_node`` GPUs; one JAX process per GPU or per node."""
    if nodes < 1:
        raise PreflightError(f"--nodes={nodes} must be >= 1")
    if gpus_per_node < 1:
        raise PreflightError(f"--gpus_per_node={gpus_per_node} must be >= 1")
    if process_per not in ("gpu", "node"):
        raise PreflightError(f"--process_per={process_per!r} must be 'gpu' or 'node'")
    processes = nodes * gpus_per_node if process_per == "gpu" else nodes
    return Accelerator(f"{nodes} nodes x {gpus_per_node} GPUs", nodes * gpus_per_node, nodes, processes)


def cpu_accelerator(num_processes: int, devices_per_process: int) -> Accelerator:
    """``num_processes`` local processes, each simulating ``devices_per_process`` CPU devices."""
    if num_processes < 1:
        raise PreflightError(f"--num_processes={num_processes} must be >= 1")
    if devices_per_process < 1:
        raise PreflightError(f"--devices_per_process={devices_per_process} must be >= 1")
    name = f"{num_processes} processes x {devices_per_process} CPU devices"
    return Accelerator(name, num_processes * devices_per_process, 1, num_processes)
