"""SIGTERM as a clean stop: the trainer saves what is new (if anything) and exits with status 143.

A Python signal handler runs only between bytecodes, so the handler just records the signal; the trainer
asks at every start-up phase boundary (``check_startup``) and after every step (``reached``):

- before the first step there is nothing new to save (the state is the restored checkpoint's, or a fresh
  init), so the run stops at the next boundary with ``Preempted`` and leaves the work directory as it was;
- after a step, the trainer logs that step's metrics, saves a checkpoint and then raises ``Preempted``.

The handler is armed before the trainer prints anything, so its first console line is a readiness signal:
a SIGTERM sent after it never kills the process by the default action.

Multi-host runs: ``jax.distributed.initialize`` hands SIGTERM to JAX's preemption service, which tells
every process; ``reached(step)`` is its sync point, so all processes save the same step. Before step 1 the
service has no step to agree on: a notice that arrives during start-up is held and honoured at the first
step's sync point (every process saves step ``start + 1`` and exits 143). A SIGTERM that arrives before
``initialize`` is recorded by this handler and stops that process at its next start-up boundary; the other
processes then stop when the distributed runtime reports the missing peer (on a preempted slice they all
get the signal anyway). With the preemption service disabled, a multi-host run stops on SIGTERM only
during start-up; in the loop a single process cannot stop alone without stranding the others' collectives.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

import jax
from jax.experimental import multihost_utils

PREEMPTED_EXIT = 143  # 128 + SIGTERM, what a launcher sees from a process killed by SIGTERM


class Preempted(Exception):
    """SIGTERM arrived; the message says what was saved (possibly nothing new)."""


class Preemption:
    """Records SIGTERM while active (a context manager that restores the previous handler on exit)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: signal.Handlers | None = None
        self._armed = False

    def __enter__(self) -> Preemption:
        if threading.current_thread() is threading.main_thread():  # signal.signal's own rule
            self._previous = signal.signal(signal.SIGTERM, self._record)
            self._armed = True
        return self

    def __exit__(self, *exc_info) -> None:
        if self._armed:
            signal.signal(signal.SIGTERM, self._previous)
            self._armed = False

    def _record(self, signum: int, frame: FrameType | None) -> None:  # noqa: ARG002
        self.requested = True

    def check_startup(self, phase: str) -> None:
        """Stops the run at a start-up boundary if SIGTERM arrived: nothing new exists to be saved yet."""
        if self.requested:
            raise Preempted(f"SIGTERM during start-up (after {phase}): nothing new needed saving; stopped")

    def reached(self, step: int) -> bool:
        """True when the run must save ``step`` and stop (multi-host: JAX's preemption sync point)."""
        if jax.process_count() > 1:
            try:  # every process must answer alike, so the local flag is not consulted here
                return bool(multihost_utils.reached_preemption_sync_point(step))
            except RuntimeError:  # the preemption service is disabled (jax_enable_preemption_service)
                return False
        return self.requested
