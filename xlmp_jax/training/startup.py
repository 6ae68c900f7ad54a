"""What a training run does before its first step that is not the model's: the work directory, the timed
start-up phases (each ending at a fault point and a SIGTERM check), and keeping TensorFlow off the GPUs.

Apart from ``trainer`` so that the run itself reads as its phases: config, data, init, restore, first batch,
compile, then the loop.
"""

from __future__ import annotations

import os
import tempfile
import time

from xlmp_jax.runtime import console
from xlmp_jax.runtime.faults import FaultInjector
from xlmp_jax.runtime.preemption import Preemption
from xlmp_jax.training.goodput import Goodput


class TrainError(RuntimeError):
    """A run that cannot start or must stop; the message names the cause."""


def prepare_workdir(workdir: str) -> str:
    """Creates the work directory and checks that it is writable (a clear error naming it if not)."""
    workdir = os.path.abspath(workdir)
    try:
        os.makedirs(workdir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=workdir, prefix=".write_test_"):
            pass
    except OSError as e:
        raise TrainError(f"work directory {workdir!r} is not writable: {e.strerror or e}") from e
    return workdir


# The goodput category of a start-up phase (xlmp_jax/training/goodput.py); the others are ``startup/<phase>``.
_GOODPUT_CATEGORY = {"restore": "checkpoint_restore", "compile": "compile"}


class StartupPhases:
    """Times the start-up phases and ends each at a boundary: its fault point, then the SIGTERM check.

    ``goodput`` (set once the work directory is the run's) books each phase to its goodput category."""

    def __init__(self, preemption: Preemption, faults: FaultInjector):
        self.preemption, self.faults = preemption, faults
        self.seconds: dict[str, float] = {}
        self.goodput: Goodput | None = None
        self._began = self._last = time.perf_counter()

    def end(self, phase: str) -> None:
        now = time.perf_counter()
        self.seconds[phase], self._last = now - self._last, now
        if self.goodput is not None:
            self.goodput.charge(_GOODPUT_CATEGORY.get(phase, f"startup/{phase}"))
        self.faults(f"after_{phase}")
        self.preemption.check_startup(phase)

    def summary(self) -> str:
        parts = ", ".join(f"{name.replace('_', ' ')} {s:.1f}s" for name, s in self.seconds.items())
        return f"start-up took {self._last - self._began:.1f}s ({parts})"


def hide_accelerators_from_tensorflow() -> None:
    """An input pipeline that uses TensorFlow uses it on the CPU only; it must not take GPU memory from JAX.

    Imports nothing: TensorFlow is set up so only if something imports it (``console`` also keeps its C++
    start-up lines off the console); a run on prepared data never loads it."""
    console.hide_gpus_from_tensorflow_on_import()
