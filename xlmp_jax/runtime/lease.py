"""One run per work directory: a lease file naming its holder, renewed by a heartbeat, taken over once expired.

Two trainers writing one work directory would interleave checkpoints and metrics. A lock file is not
enough: work directories live on gs:// too, and a preempted VM may come back as another host, so a
holder that died must not lock the directory for good. The lease ``WORKDIR/lease.json`` holds the
holder's host, pid, start time and expiry time:

- taking it is an exclusive create (``O_CREAT | O_EXCL`` on a local disk; on gs://, an upload with the
  generation-match precondition 0, "only if absent");
- the holder's heartbeat thread rewrites the expiry every ``heartbeat_s``; any other writer only replaces
  the lease it read (a compare-and-swap: a directory ``flock`` around read-compare-write locally, a
  generation match on gs://);
- a lease past its expiry, or held by a dead process of this host, is taken over; otherwise the newcomer
  is refused with ``LeaseHeld``, whose message names the holder and when the lease expires;
- the holder deletes it on exit (SIGKILL leaves it behind: it expires, or a restart on the same host sees
  the dead pid and takes it at once).

Expiry is wall-clock time written by the holder's host: hosts' clocks must agree to well within
``ttl_s`` (NTP does). The exclusive create and the compare-and-swap are the stores' (``lease_store``:
a local disk, gs://, or ``etils.epath`` without atomic writes, with a warning).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from xlmp_jax.runtime.lease_store import Store, store_for

DEFAULT_TTL_S = 120.0

log = logging.getLogger(__name__)


class LeaseHeld(RuntimeError):
    """Another live run holds the work directory's lease; the message names it and when the lease expires."""


class LeaseLost(LeaseHeld):
    """This run's lease was taken over (it stalled past the expiry): another run now writes the work directory."""


@dataclasses.dataclass(frozen=True)
class Holder:
    """Who holds a lease, and until when (Unix seconds)."""

    host: str
    pid: int
    token: str
    started: float
    expires: float

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Holder | None:
        """None for an unreadable lease (a writer that died mid-write on a filesystem without atomic writes)."""
        try:
            d = json.loads(text)
            return cls(str(d["host"]), int(d["pid"]), str(d["token"]), float(d["started"]), float(d["expires"]))
        except (ValueError, KeyError, TypeError):
            return None

    def describe(self, now: float) -> str:
        left = self.expires - now
        until = f"in {left:.0f} s" if left >= 0 else f"{-left:.0f} s ago"
        return (
            f"host {self.host} pid {self.pid}, running since {_when(self.started)}; "
            f"the lease expires at {_when(self.expires)} ({until}) unless renewed"
        )


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


class Lease:
    """This process's claim on a work directory (``acquire`` / heartbeat / ``release``; also a context manager).

    ``clock``, ``host`` and ``pid`` are for tests; a heartbeat renews every ``heartbeat_s`` (default ttl/4).
    """

    def __init__(
        self,
        workdir: str,
        *,
        ttl_s: float = DEFAULT_TTL_S,
        heartbeat_s: float | None = None,
        store: Store | None = None,
        clock: Callable[[], float] = time.time,
        host: str | None = None,
        pid: int | None = None,
    ):
        if not ttl_s > 0:
            raise ValueError(f"lease ttl_s={ttl_s!r} must be positive")
        heartbeat_s = ttl_s / 4 if heartbeat_s is None else heartbeat_s
        if not 0 < heartbeat_s < ttl_s:
            raise ValueError(f"lease heartbeat_s={heartbeat_s!r} must be positive and below ttl_s={ttl_s!r}")
        self.workdir = workdir
        self.ttl_s, self.heartbeat_s = ttl_s, heartbeat_s
        self.store = store if store is not None else store_for(workdir)
        self.clock = clock
        self.host = host or socket.gethostname()
        self.pid = os.getpid() if pid is None else pid
        self.token = uuid.uuid4().hex
        self.started = clock()
        self.lost = False  # set by the heartbeat when another run took the lease over
        self._version: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def held(self) -> bool:
        return self._version is not None

    def _record(self) -> str:
        now = self.clock()
        return Holder(self.host, self.pid, self.token, self.started, now + self.ttl_s).to_json()

    def _stale(self, holder: Holder | None, now: float) -> bool:
        """Expired, unreadable, or held by a process of this host that no longer exists."""
        if holder is None or holder.expires <= now:
            return True
        return holder.host == self.host and holder.pid != self.pid and not _pid_alive(holder.pid)

    def acquire(self) -> None:
        """Takes the lease, or raises ``LeaseHeld`` naming its live holder."""
        for _ in range(5):  # each retry follows another process's write in between
            text = self._record()
            if self.store.create(text):
                self._version = self._version_after(text)
                return
            current = self.store.read()
            if current is None:  # released in between
                continue
            holder, now = Holder.from_json(current[0]), self.clock()
            if not self._stale(holder, now):
                raise LeaseHeld(
                    f"work directory {self.workdir} is in use by another run: its lease ({self.store.where}) is "
                    f"held by {holder.describe(now)}. Stop that run or pass another --workdir; a lease whose "
                    "holder died expires by itself (at once for a dead process on this host)."
                )
            if self.store.replace(text, current[1]):
                self._version = self._version_after(text)
                log.warning(
                    "took over the lease of %s from %s",
                    self.workdir,
                    holder.describe(now) if holder else "an unreadable lease file",
                )
                return
        raise LeaseHeld(f"work directory {self.workdir}: its lease ({self.store.where}) changed hands 5 times")

    def _read_holder(self) -> tuple[Holder | None, Any]:
        current = self.store.read()
        return (None, None) if current is None else (Holder.from_json(current[0]), current[1])

    def _version_after(self, text: str) -> Any:
        """The version of what this process just wrote (read back: gs:// generations are assigned by GCS)."""
        holder, version = self._read_holder()
        if holder is None or holder.token != self.token:
            raise LeaseHeld(f"work directory {self.workdir}: its lease ({self.store.where}) was taken at once")
        return version

    def renew(self) -> bool:
        """Pushes the expiry ``ttl_s`` ahead; False (and ``lost``) when another run has taken the lease."""
        for _ in range(2):
            if not self.held:
                return False
            text = self._record()
            if self.store.replace(text, self._version):
                try:
                    self._version = self._version_after(text)
                    return True
                except LeaseHeld:  # taken over between the write and the read-back
                    pass
            holder, version = self._read_holder()
            if holder is None or holder.token != self.token:
                break
            self._version = version  # still ours, at a version this process did not record: once more
        self.lost, self._version = True, None
        log.error(
            "lost the lease of %s: %s; this run's writes may now collide with another run's",
            self.workdir,
            f"now held by {holder.describe(self.clock())}" if holder else "the lease file is gone",
        )
        return False

    def check(self) -> None:
        """Raises ``LeaseLost`` once the heartbeat has found the lease taken over: this run must stop writing."""
        if self.lost:
            raise LeaseLost(
                f"work directory {self.workdir}: this run's lease was taken over by another run (this one stalled "
                f"past its expiry, {self.ttl_s:.0f} s without a renewal); stopped without saving, the other run "
                "now writes there"
            )

    def release(self) -> None:
        """Stops the heartbeat and deletes the lease if it is still this process's."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self.held:
            try:
                self.store.delete(self._version)
            except OSError as e:  # must not hide the error the run may be ending with; the lease then expires
                log.warning("could not delete the lease of %s (%s); it expires by itself", self.workdir, e)
            self._version = None

    def start_heartbeat(self) -> None:
        """Renews the lease every ``heartbeat_s`` in a daemon thread until ``release`` (or the lease is lost)."""
        self._stop.clear()

        def beat() -> None:
            while not self._stop.wait(self.heartbeat_s):
                try:
                    if not self.renew():
                        return
                except OSError as e:  # a storage hiccup: the next beat tries again, well before expiry
                    log.warning("could not renew the lease of %s: %s", self.workdir, e)

        self._thread = threading.Thread(target=beat, name="xlmp-lease-heartbeat", daemon=True)
        self._thread.start()

    def __enter__(self) -> Lease:
        self.acquire()
        self.start_heartbeat()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


@contextlib.contextmanager
def hold_workdir(workdir: str, **lease_args: Any) -> Iterator[Lease | None]:
    """The run's lease on ``workdir``: process 0 takes it, every process learns whether it got it.

    Multi-host runs write through process 0 only, so one lease per run; the others wait for its answer
    and all raise ``LeaseHeld`` together when it is refused (none may start alone). Yields the lease
    (None on other processes) and releases it when the block ends.
    """
    lease, refused = None, None
    if jax.process_index() == 0:
        lease = Lease(workdir, **lease_args)
        try:
            lease.acquire()
        except LeaseHeld as e:
            lease, refused = None, e
    if jax.process_count() > 1:
        ok = bool(multihost_utils.broadcast_one_to_all(np.int32(refused is None)))
        if not ok and refused is None:
            refused = LeaseHeld(f"work directory {workdir} is in use by another run (see process 0's error)")
    if refused is not None:
        raise refused
    if lease is None:
        yield None
        return
    lease.start_heartbeat()
    try:
        yield lease
    finally:
        lease.release()
