"""JAX's persistent compilation cache, on by default, so that a restart loads its programs instead of compiling.

Where the cache lives, in order of precedence:

1. ``JAX_COMPILATION_CACHE_DIR`` in the environment (JAX's own switch), when set and non-empty: the
   operator's explicit choice, and what a job launcher sharing one cache between runs already sets;
2. the config field (``train.compilation_cache_dir`` / the eval sweep's ``compilation_cache_dir``),
   default ``~/.cache/xlmp/jax``; ``''`` turns the cache off.

Every program is cached, however fast it compiled (JAX's default skips those under one second), unless
``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS`` says otherwise: start-up compiles several small programs
(init, eval) whose seconds add up on a restart.

The cache is trusted: anyone who can write to it can run code in the job. Keep it per user.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping

import jax

DEFAULT_DIR = os.path.join("~", ".cache", "xlmp", "jax")
ENV_DIR = "JAX_COMPILATION_CACHE_DIR"
ENV_MIN_TIME = "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"
_REQUEST_EVENT = "/jax/compilation_cache/compile_requests_use_cache"
_HIT_EVENT = "/jax/compilation_cache/cache_hits"


def resolve_dir(configured: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The cache directory to use (absolute), or None for no cache: the environment wins, then the config."""
    environ = os.environ if environ is None else environ
    path = environ.get(ENV_DIR, "") or configured
    return os.path.abspath(os.path.expanduser(path)) if path else None


def enable(configured: str, environ: Mapping[str, str] | None = None) -> str | None:
    """Points JAX's persistent cache at ``resolve_dir(configured)`` (or turns it off); returns the directory.

    Must run before the programs it should cover compile; the counters of ``COUNTER`` start listening here.
    """
    environ = os.environ if environ is None else environ
    path = resolve_dir(configured, environ)
    COUNTER.listen()
    if path is None:
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:  # one clear line naming the setting, not a traceback
        raise ValueError(
            f"compilation cache directory {path!r} cannot be created ({e.strerror or e}); set "
            "compilation_cache_dir (train.* for training) to a writable folder, or '' to turn the cache off"
        ) from e
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", path)
    if ENV_MIN_TIME not in environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return path


class CacheCounter:
    """Counts compilations that consulted the persistent cache, and those it answered (JAX monitoring events)."""

    def __init__(self) -> None:
        self.requests = 0
        self.hits = 0
        self._listening = False
        self._lock = threading.Lock()

    def listen(self) -> None:
        """Registers the listener once per process (JAX has no public way to remove one)."""
        with self._lock:
            if not self._listening:
                jax.monitoring.register_event_listener(self._on_event)
                self._listening = True

    def _on_event(self, event: str, **_: object) -> None:
        if event == _REQUEST_EVENT:
            self.requests += 1
        elif event == _HIT_EVENT:
            self.hits += 1

    def snapshot(self) -> tuple[int, int]:
        return self.requests, self.hits


COUNTER = CacheCounter()


def describe(since: tuple[int, int], path: str | None) -> str:
    """What the cache did since ``since`` (a ``COUNTER.snapshot()``), for the start-up log line."""
    if path is None:
        return "persistent compilation cache off"
    requests, hits = (now - before for now, before in zip(COUNTER.snapshot(), since, strict=True))
    return f"{hits} of {requests} programs loaded from the compilation cache {path}"
