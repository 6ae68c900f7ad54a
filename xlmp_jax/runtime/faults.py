"""Deterministic fault injection: the trainer signals itself at named points, so tests hit each case every time.

``XLMP_FAULTS`` holds a comma-separated list of ``signal@point`` or ``signal@point:step`` entries, e.g.
``XLMP_FAULTS=sigterm@after_restore`` or ``XLMP_FAULTS=sigkill@after_step:4,sigterm@after_step:5``. The
signal is sent with ``os.kill`` to the process itself when the trainer passes the point (at that step, if
one is given), which is what a preemption or an OOM killer would do at that moment, minus the timing luck.
While any fault is set, the trainer waits for each checkpoint save to commit before going on (``active``),
so where a fault lands relative to a commit is exact too.
Unset, passing a point costs a loop over an empty tuple.
"""

from __future__ import annotations

import dataclasses
import os
import signal

ENV = "XLMP_FAULTS"
SIGNALS = {"sigterm": signal.SIGTERM, "sigkill": signal.SIGKILL, "sigint": signal.SIGINT}
# Where the trainer calls ``inject``; the start-up ones are its phase boundaries, in order.
STARTUP_POINTS = ("after_config", "after_data", "after_init", "after_restore", "after_first_batch", "after_compile")
# In the loop, in the order a step passes them: ``in_eval`` after an eval's first batch, ``in_save`` inside a
# checkpoint save (its items being written, nothing committed), ``after_commit`` once the save is committed.
STEP_POINTS = ("after_step", "after_log", "in_eval", "in_save", "after_commit", "after_checkpoint")
POINTS = STARTUP_POINTS + STEP_POINTS


@dataclasses.dataclass(frozen=True)
class Fault:
    signal: signal.Signals
    point: str
    step: int | None = None  # None: every time the point is passed


def parse(spec: str) -> tuple[Fault, ...]:
    """``"sigkill@after_step:4,sigterm@after_restore"`` -> Faults; ValueError naming a bad entry."""
    faults = []
    for entry in filter(None, (e.strip() for e in spec.split(","))):
        name, at, where = entry.partition("@")
        point, colon, step = where.partition(":")
        problem = None
        if not at or name.lower() not in SIGNALS:
            problem = f"the signal must be one of {sorted(SIGNALS)}"
        elif point not in POINTS:
            problem = f"the point must be one of {POINTS}"
        elif colon and not step.isdigit():
            problem = "the step after ':' must be a non-negative integer"
        if problem:
            raise ValueError(f"{ENV}: bad entry {entry!r}: {problem}")
        faults.append(Fault(SIGNALS[name.lower()], point, int(step) if colon else None))
    return tuple(faults)


class FaultInjector:
    """Signals this process at the points named in ``spec`` (default: the ``XLMP_FAULTS`` variable)."""

    def __init__(self, spec: str | None = None):
        self.faults = parse(os.environ.get(ENV, "") if spec is None else spec)

    @property
    def active(self) -> bool:
        return bool(self.faults)

    def __call__(self, point: str, step: int | None = None) -> None:
        for fault in self.faults:
            if fault.point == point and (fault.step is None or fault.step == step):
                os.kill(os.getpid(), fault.signal)
