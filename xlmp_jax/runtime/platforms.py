"""Keeps JAX from probing for a TPU that is not there (libtpu's start-up chatter off the console).

``libtpu`` is a requirement (``xlmp_jax.aot`` compiles for TPU topologies on any machine), and with it
installed JAX tries the TPU backend first whenever ``JAX_PLATFORMS`` is unset: on a CPU or GPU machine
libtpu then prints about ten lines ("could not determine TPU accelerator type", "unexpected worker
hostname", a source-location trace) and costs ~1.5 s before JAX falls back. ``skip_absent_tpu`` (run when
``xlmp_jax`` is imported, before any device query) leaves the TPU out of ``jax_platforms`` when no TPU chip
is attached (JAX's own PCI check), so the probe happens only where a TPU is. It changes nothing when
``JAX_PLATFORMS`` (or ``jax_platforms``) is set, when ``JAX_FORCE_TPU_INIT`` is, or when libtpu is absent.
On a GPU machine the list is then ``cuda,cpu``, and a CUDA that fails to start is an error rather than a
silent fall-back to the CPU (set ``JAX_PLATFORMS`` to choose otherwise).
"""

from __future__ import annotations

import importlib.util
import os

import jax
from jax._src import hardware_utils  # JAX's own PCI scan (jax is pinned in requirements.txt)


def _tpu_chips() -> int:
    return hardware_utils.num_available_tpu_chips_and_device_id()[0]


def _cuda_usable() -> bool:
    """A CUDA plugin is installed and an NVIDIA GPU is attached and not hidden (``CUDA_VISIBLE_DEVICES``)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    plugin = any(importlib.util.find_spec(m) for m in ("jax_cuda12_plugin", "jax_cuda13_plugin"))
    return plugin and hardware_utils.has_visible_nvidia_gpu()


def _platforms_chosen() -> bool:
    return bool(os.environ.get("JAX_PLATFORMS") or jax.config.jax_platforms)


def platforms_without_absent_tpu() -> str | None:
    """The ``jax_platforms`` value that skips an absent TPU (``'cuda,cpu'`` or ``'cpu'``), or None to leave JAX be."""
    if _platforms_chosen() or "JAX_FORCE_TPU_INIT" in os.environ:
        return None
    if importlib.util.find_spec("libtpu") is None or _tpu_chips() > 0:
        return None
    return "cuda,cpu" if _cuda_usable() else "cpu"


def skip_absent_tpu() -> None:
    """Sets ``jax_platforms`` by ``platforms_without_absent_tpu`` (a no-op once JAX has picked its backends)."""
    value = platforms_without_absent_tpu()
    if value is not None:
        jax.config.update("jax_platforms", value)
