"""Cloud TPU slices as compile-only devices, and each generation's datasheet figures.

``topology_devices('v5litepod-256')`` returns the 256 devices of a v5e 16x16 slice from libtpu's topology
description (``jax.experimental.topologies``): nothing runs on them, but a program lowered on a mesh of
them compiles exactly as it would on the pod, with the compiler's memory and cost analyses. It works on any
machine with ``libtpu`` installed, with JAX's backend on CPU. One device per chip (megacore on v4/v5p), so
the count is ``launch.accelerators.tpu_accelerator``'s.

``CHIPS`` holds the per-chip figures the roofline (``xlmp_jax.aot``) divides by, from Google's Cloud TPU
pages (docs.cloud.google.com/tpu/docs/v4, v5e, v5p-training, v6e; read 2026-12): peak bf16 FLOP/s, HBM
capacity and bandwidth, and the bidirectional ICI bandwidth per chip, of which one device sends at most
half. The v4 page gives no per-chip ICI figure: 6 links x 50 GB/s each way (the TPU v4 paper, Jouppi et al.
2023) = 300 GB/s each way is used, and marked as such.

The data-center network (DCN) that joins the slices of a multi-slice job is far slower than ICI. Its
per-chip share comes from the v5e page (6.4 Tbps per 256-chip pod, 2 x 100 Gbps per 8-chip host: 25 Gbps
a chip) and the v5p page (50 Gbps a chip). The v4 and v6e pages read here give none, so v5e's 25 Gbps is
assumed for them, and marked as such; ``xlmp_jax.aot --dcn_gbps`` replaces the figure.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from typing import Any

from launch.accelerators import tpu_accelerator  # the launcher's device counts, one rule for both
from launch.command_line import PreflightError

GIB = 2**30


@dataclasses.dataclass(frozen=True)
class Chip:
    """One TPU chip's datasheet figures (see the module docstring for the sources)."""

    generation: str  # "v4", "v5e", "v5p", "v6e"
    topology_prefix: str  # libtpu's name for it in topology strings ("v5e:16x16")
    peak_flops: float  # bf16 FLOP/s
    hbm_bytes: int
    hbm_bandwidth: float  # bytes/s
    ici_send_bandwidth: float  # bytes/s one chip sends (half the bidirectional figure)
    dims: int  # 2-D (v5e, v6e) or 3-D (v4, v5p) torus
    chip_config: str  # "megacore": one JAX device per chip of two TensorCores
    source: str
    dcn_bandwidth: float = 25e9 / 8  # bytes/s one chip sends across slices (its share of its host's NICs)
    dcn_source: str = "not on the page: v5e's 25 Gbps a chip assumed"


CHIPS: dict[str, Chip] = {
    "v4": Chip("v4", "v4", 275e12, 32 * GIB, 1200e9, 300e9, 3, "megacore",
               "Cloud TPU v4 page; ICI: 6 x 50 GB/s each way, TPU v4 paper (not on the page)"),
    "v5e": Chip("v5e", "v5e", 197e12, 16 * GIB, 819e9, 200e9, 2, "default",
                "Cloud TPU v5e page: 197 TFLOPs, 16 GiB, 819 GBps, ICI 400 GBps bidirectional",
                25e9 / 8, "v5e page: DCN 6.4 Tbps per 256-chip pod = 25 Gbps a chip"),
    "v5p": Chip("v5p", "v5p", 459e12, 95 * GIB, 2765e9, 600e9, 3, "megacore",
                "Cloud TPU v5p page: 459 TFLOPs, 95 GiB, 2765 GBps, ICI 1200 GBps bidirectional",
                50e9 / 8, "v5p page: DCN 50 Gbps a chip"),
    "v6e": Chip("v6e", "v6e", 918e12, 32 * GIB, 1638e9, 400e9, 2, "default",
                "Cloud TPU v6e page: 918 TFLOPs, 32 GB, 1638 GBps, ICI 800 GBps bidirectional"),
}  # fmt: skip

_GENERATIONS = {"v4": "v4", "v5p": "v5p", "v5litepod": "v5e", "v5e": "v5e", "v6e": "v6e"}


def parse_type(accelerator_type: str) -> tuple[Chip, int]:
    """``'v5litepod-256'`` -> (v5e's ``Chip``, 256 chips). v4-N / v5p-N count TensorCores (N / 2 chips)."""
    m = re.fullmatch(r"(v4|v5p|v5litepod|v5e|v6e)-(\d+)", accelerator_type)
    if not m:
        raise ValueError(
            f"--topology={accelerator_type!r} is not a TPU accelerator type this tool compiles for "
            "(v4-N, v5p-N, v5litepod-N or v6e-N, e.g. v5litepod-256)"
        )
    try:
        chips = tpu_accelerator(accelerator_type).num_devices
    except PreflightError as e:
        raise ValueError(str(e).replace("--accelerator_type", "--topology")) from None
    return CHIPS[_GENERATIONS[m.group(1)]], chips


def topology_name(accelerator_type: str) -> str:
    """libtpu's topology string for a slice: ``'v5litepod-256'`` -> ``'v5e:16x16'``, ``'v4-32'`` -> ``'v4:2x2x4'``.

    2-D slices are the Cloud shapes (1x1, 2x2, 2x4, 4x4, 4x8, 8x8, 8x16, 16x16); 3-D ones the most
    cube-like A x B x C with A <= B <= C, each a power of two (2x2x1 for 4 chips, 4x4x4 for 64).
    """
    chip, chips = parse_type(accelerator_type)
    if chip.dims == 2:
        a = 2 ** (int(math.log2(chips)) // 2)
        return f"{chip.topology_prefix}:{a}x{chips // a}"
    if chips < 4 or chips & (chips - 1):
        raise ValueError(f"--topology={accelerator_type}: {chips} chips is not a 3-D slice shape this tool knows")
    if chips == 4:
        return f"{chip.topology_prefix}:2x2x1"
    dims = [1, 1, 1]
    for i in range(int(math.log2(chips))):
        dims[i % 3] *= 2
    a, b, c = sorted(dims)
    return f"{chip.topology_prefix}:{a}x{b}x{c}"


def topology_devices(accelerator_type: str, num_slices: int = 1) -> list[Any]:
    """The compile-only devices of ``num_slices`` slices of ``accelerator_type`` (each with ``slice_index``).

    Sets libtpu's environment for a machine that is not a TPU VM (unless already set: on a TPU VM the real
    values stay): no metadata-server query, and the accelerator type and a worker name, without which
    libtpu prints a page of warnings while it loads; and no log files (``TPU_LOG_DIR=disabled``; libtpu
    writes /tmp/tpu_logs otherwise; set ``TPU_LOG_DIR`` to a folder to keep the compiler's logs); and libtpu's
    one-process lock off (``ALLOW_MULTIPLE_LIBTPU_LOAD``).
    """
    if num_slices < 1:
        raise ValueError(f"--num_slices={num_slices} must be >= 1")
    name = topology_name(accelerator_type)
    chip, _ = parse_type(accelerator_type)
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    os.environ.setdefault("TPU_ACCELERATOR_TYPE", accelerator_type)
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    os.environ.setdefault("TPU_LOG_DIR", "disabled")
    # Compiling for a description opens no chip, so several processes (a test run's workers, the table's
    # workers, a training job's preflight) may hold libtpu at once instead of failing on its lock file.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    try:
        from jax.experimental import topologies  # after the libtpu settings above, with its own error
    except ImportError as e:  # pragma: no cover - part of jax
        raise RuntimeError(f"jax.experimental.topologies is missing: {e}") from e
    try:
        desc = topologies.get_topology_desc(
            platform="tpu", topology_name=name, chip_config_name=chip.chip_config, num_slices=num_slices
        )
    except Exception as e:
        if "libtpu" in str(e).lower() or "plugin" in str(e).lower() or "TPU" in str(e):
            raise RuntimeError(
                f"could not load the TPU compiler for {name} ({e}); `pip install libtpu==0.0.42.1` "
                "(requirements.txt) provides it"
            ) from e
        raise
    return list(desc.devices)
