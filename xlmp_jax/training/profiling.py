"""A ``jax.profiler`` trace of chosen train steps, from the config (``train.profile_steps=(first, count)``).

The trace goes into ``DIR/tb/plugins/profile/<run>/`` (one ``.xplane.pb`` per host), where TensorBoard's
profile plugin (and xprof) finds it next to the run's scalars; each step is a ``StepTraceAnnotation``, so the
trace viewer and the op profile split the time by step. Process 0 only, unless ``train.profile_all_hosts``.
Steps before ``first`` are left out so that compilation and the first step's warm-up stay out of the trace.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import jax

from xlmp_jax.runtime import console


class StepProfiler:
    """Starts the trace before step ``first`` and stops it after step ``first + count - 1``."""

    def __init__(self, workdir: str, steps: tuple[int, ...], *, active: bool):
        self.first, self.last = (steps[0], steps[0] + steps[1] - 1) if steps and active else (0, -1)
        self.directory = os.path.join(workdir, "tb")
        self.tracing = self.done = False

    def step(self, step: int) -> contextlib.AbstractContextManager:
        """The context to run step ``step`` in: starts the trace at ``first``, annotates the traced steps."""
        if self.first <= step <= self.last and not (self.tracing or self.done):  # a resumed run traces what is left
            jax.profiler.start_trace(self.directory)
            self.tracing = True
        if self.tracing:
            return jax.profiler.StepTraceAnnotation("train", step_num=step)
        return contextlib.nullcontext()

    def after_step(self, step: int, state: Any) -> None:
        """After ``last``: waits for the traced steps to finish on the device, then writes the trace."""
        if self.tracing and step >= self.last:
            jax.block_until_ready(state)
            self.stop()
            console.say(f"profile of steps {self.first}-{step} written to {self.directory} (TensorBoard: Profile tab)")

    def stop(self) -> None:
        """Ends the trace if one is running (a run that stops early still writes what it traced)."""
        if self.tracing:
            self.tracing, self.done = False, True
            jax.profiler.stop_trace()
