"""A console a person reads: TensorFlow's C++ start-up chatter and library INFO logs kept off it.

TensorFlow (used here only for the CPU input pipeline) writes its C++ log lines straight to file
descriptor 2 while it is imported and while it lists devices: a oneDNN notice, "Could not find cuda
drivers", "failed call to cuInit", absl's "before absl::InitializeLog()" notice. The info lines come
before ``TF_CPP_MIN_LOG_LEVEL`` is read, so that variable does not hide them (tried with 3, TensorFlow
2.21), and 3 would hide every later TensorFlow and XLA error as well. None of them is actionable: the
input pipeline never uses a GPU (``import_tensorflow`` hides the GPUs from TensorFlow, JAX keeps them).

``import_tensorflow`` therefore imports TensorFlow with descriptor 2 sent to a temporary file and
writes back every captured line except the known-benign ones (``is_native_noise``: TensorFlow's log
format *and* one of a few named messages), so an unexpected line, ours or TensorFlow's, still reaches
the console. ``TF_ENABLE_ONEDNN_OPTS=0`` (unless set) keeps TensorFlow off oneDNN: the pipeline's ops
are integer and string ops, and oneDNN's only visible effect there is an error-level line about
DT_INT64 on CPUs without AVX-512. ``quiet_library_logs`` keeps Orbax's and TensorFlow's INFO lines
(``Restoring checkpoint from ...``) out of the absl log on the console.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from types import ModuleType
from typing import Any

# TensorFlow / absl C++ log prefix: severity letter, MMDD, time, thread id, file:line].
_NATIVE_PREFIX = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ (?P<source>[\w.]+):\d+\] (?P<message>.*)$")
# (source file, message regex) of lines that say nothing actionable on a machine running this project.
_BENIGN = (
    ("port.cc", r"oneDNN custom operations are on"),
    ("cudart_stub.cc", r"Could not find cuda drivers"),
    ("cuda_platform.cc", r"failed call to cuInit"),
    ("cuda_executor.cc", r"failed call to cuInit|could not open file to read NUMA node"),
    ("cuda_dnn.cc", r"Unable to register cuDNN factory"),
    ("cuda_fft.cc", r"Unable to register cuFFT factory"),
    ("cuda_blas.cc", r"Unable to register cuBLAS factory"),
    ("computation_placer.cc", r"computation placer already registered"),
    ("cpu_feature_guard.cc", r"This TensorFlow binary is optimized to use available CPU instructions"),
    ("util.cc", r"oneDNN supports DT_\w+ only on platforms with AVX-512"),
)
_ABSL_PREINIT = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"


def is_native_noise(line: str) -> bool:
    """True for a line of TensorFlow's C++ start-up chatter that the console can do without."""
    line = line.rstrip("\r\n")
    if line == _ABSL_PREINIT:
        return True
    match = _NATIVE_PREFIX.match(line)
    if match is None:
        return False
    return any(match["source"] == source and re.search(pattern, match["message"]) for source, pattern in _BENIGN)


@contextlib.contextmanager
def filtered_stderr() -> Iterator[None]:
    """Captures descriptor 2 for the block, then writes back every line that is not ``is_native_noise``.

    A temporary file, not a pipe: nothing can block however much is written. Lines are written back
    when the block ends (also when it raises), so ordering with stdout is kept only per block.
    """
    fd = 2  # where native code writes, whatever Python's sys.stderr is now
    try:
        os.fstat(fd)
    except OSError:  # no descriptor 2 (a daemon): nothing to filter
        yield
        return
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), fd)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            capture.seek(0)
            lines = capture.read().decode("utf-8", "replace").splitlines(True)
            kept = [line for line in lines if not is_native_noise(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def import_tensorflow(*, hide_gpus: bool = True) -> ModuleType | None:
    """Imports TensorFlow without its start-up chatter; ``hide_gpus``: it must not take GPU memory from JAX.

    Returns the module, or None when TensorFlow is not installed.
    """
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    with filtered_stderr():
        try:
            import tensorflow as tf
        except ImportError:
            return None
        if hide_gpus:
            try:  # lists the physical devices: where the cuInit line comes from
                tf.config.set_visible_devices([], "GPU")
            except RuntimeError:  # TensorFlow already initialised its devices
                pass
    return tf


def quiet_library_logs() -> None:
    """Only warnings and errors from the absl log and Orbax / TensorFlow's Python loggers reach the console."""
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)
    for name in ("orbax", "tensorflow"):
        logging.getLogger(name).setLevel(logging.WARNING)


def is_terminal(stream: Any) -> bool:
    """Whether ``stream`` is a terminal (a progress bar is drawn there; elsewhere plain lines)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


def bar_geometry(stream: Any) -> dict[str, Any]:
    """tqdm size arguments for ``stream``: its own size, or 100 x 20 for a pty that reports none.

    A pty without a size (``script``, some CI runners and job schedulers) reports 0 rows and columns, and
    tqdm then draws nothing at all.
    """
    try:
        size = os.get_terminal_size(stream.fileno())
    except (AttributeError, OSError, ValueError):
        size = os.terminal_size((0, 0))
    if size.columns > 0 and size.lines > 0:
        return {"dynamic_ncols": True}
    return {"ncols": 100, "nrows": 20}
