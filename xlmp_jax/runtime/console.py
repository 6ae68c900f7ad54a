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
the console. ``hide_gpus_from_tensorflow_on_import`` does the same for whatever imports TensorFlow later, without
importing it now: a run that reads prepared data never loads TensorFlow at all. ``TF_ENABLE_ONEDNN_OPTS=0`` (unless set) keeps TensorFlow off oneDNN: the pipeline's ops
are integer and string ops, and oneDNN's only visible effect there is an error-level line about
DT_INT64 on CPUs without AVX-512. ``quiet_library_logs`` keeps Orbax's and TensorFlow's INFO lines
(``Restoring checkpoint from ...``) out of the absl log on the console.

The training run's own lines are here too: ``say`` (process 0's story of the run, above the bar) and
``Progress`` (a tqdm bar on a terminal, plain ``step N: ...`` lines elsewhere).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import jax
from absl import logging as absl_logging
from tqdm import tqdm

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


def _hide_gpus(tf: ModuleType) -> None:
    try:  # lists the physical devices: where the cuInit line comes from
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # TensorFlow already initialised its devices
        pass


def import_tensorflow(*, hide_gpus: bool = True) -> ModuleType | None:
    """Imports TensorFlow without its start-up chatter; ``hide_gpus``: it must not take GPU memory from JAX.

    Returns the module, or None when TensorFlow is not installed.
    """
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    with filtered_stderr():
        try:
            import tensorflow as tf  # the point of this function: imported here, quietly
        except ImportError:
            return None
        if hide_gpus:
            _hide_gpus(tf)
    return tf


class _QuietTensorFlowLoader:
    """TensorFlow's own loader, run as ``import_tensorflow`` imports it: chatter filtered, GPUs hidden after."""

    def __init__(self, loader: Any):
        self.loader = loader

    def create_module(self, spec: Any) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        with filtered_stderr():
            self.loader.exec_module(module)
            _hide_gpus(module)

    def __getattr__(self, name: str) -> Any:  # resource readers and the like: TensorFlow's loader's
        return getattr(self.loader, name)


class _TensorFlowImportHook:
    """Gives the first import of TensorFlow the quiet loader, then leaves ``sys.meta_path``."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "tensorflow":
            return None
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietTensorFlowLoader(spec.loader)
        return spec


def hide_gpus_from_tensorflow_on_import() -> None:
    """Whatever imports TensorFlow from now on gets it as ``import_tensorflow`` gives it (quiet, GPUs hidden),
    and nothing imports it now: a process that never needs TensorFlow never loads it."""
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    if "tensorflow" in sys.modules:
        _hide_gpus(sys.modules["tensorflow"])
    elif not any(isinstance(finder, _TensorFlowImportHook) for finder in sys.meta_path):
        sys.meta_path.insert(0, _TensorFlowImportHook())


def quiet_library_logs() -> None:
    """Only warnings and errors from the absl log and Orbax / TensorFlow's Python loggers reach the console."""
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


def say(message: str) -> None:
    """Process 0's console (the run's story: mesh, resume, compile time); absl log elsewhere."""
    if jax.process_index() == 0:
        tqdm.write(f"xlmp_jax.train: {message}", file=sys.stdout)  # above the progress bar, if one is drawn
        sys.stdout.flush()
    absl_logging.info(message)


class Progress:
    """Process 0's progress: a tqdm bar (step, loss, tokens/s, ETA) on a terminal, plain lines otherwise.

    Every log step also prints one line (``step N: loss=...``); without a terminal on stderr (a log file,
    a pipe) there is no bar and that line ends with the ETA. Silent off process 0.
    """

    def __init__(self, start: int, total: int, active: bool):
        self.active, self.start, self.total = active, start, total
        self.began = time.perf_counter()
        self.postfix: dict[str, str] = {}
        self.bar = None
        if active and is_terminal(sys.stderr):
            self.bar = tqdm(
                total=total,
                initial=start,
                desc="train",
                unit="step",
                file=sys.stderr,
                **bar_geometry(sys.stderr),
            )

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def log(self, step: int, scalars: dict[str, float]) -> None:
        if not self.active:
            return
        keys = [k for k in ("loss", "mlm_accuracy", "eval/loss", "eval/mlm_accuracy") if k in scalars]
        keys += [k for k in ("learning_rate", "grad_norm", "tokens_per_s", "mfu") if k in scalars]
        line = f"step {step}: " + ", ".join(f"{k}={format_scalar(scalars[k])}" for k in keys)
        short = {"loss": "loss", "eval/loss": "eval_loss", "tokens_per_s": "tok/s"}
        self.postfix.update({name: format_scalar(scalars[k]) for k, name in short.items() if k in scalars})
        if self.bar is not None:
            self.bar.set_postfix(self.postfix, refresh=False)
            self.bar.write(line, file=sys.stdout)
        else:
            print(f"{line}, eta={self.eta(step)}", flush=True)

    def eta(self, step: int) -> str:
        """Remaining time at this run's average pace since the loop began ('?' before any step)."""
        done, elapsed = step - self.start, time.perf_counter() - self.began
        if done <= 0 or elapsed <= 0:
            return "?"
        seconds = round(max(self.total - step, 0) * elapsed / done)
        return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def format_scalar(v: float) -> str:
    """A logged number for the console: 4 decimals below 10, 1 above, 3 significant digits when tiny or huge."""
    if not math.isfinite(v):
        return str(v)
    if v and (abs(v) >= 1e5 or abs(v) < 1e-3):
        return f"{v:.3g}"
    return f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"
