"""The console a person reads (xlmp_jax/runtime/console.py, with train's progress): no TensorFlow C++ chatter, a progress bar."""

import io
import os
import re
import subprocess
import sys

import pytest
from helpers import REPO

from xlmp_jax.runtime import console

# TensorFlow / absl C++ log lines, and the words of its CUDA / oneDNN start-up notices.
NATIVE_LOG = re.compile(r"^[IWEF]\d{4} ")
NOISE_WORDS = re.compile(r"cuda|onednn|absl::InitializeLog", re.IGNORECASE)

# Lines TensorFlow 2.21 printed on a CPU-only machine before this module existed.
SEEN_NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1795985270.422419   16719 port.cc:153] oneDNN custom operations are on. You may see slightly "
    "different numerical results due to floating-point round-off errors from different computation orders. To turn "
    "them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.",
    "I0000 00:00:1795985270.423848   16719 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will "
    "not be used.",
    "E0000 00:00:1795985271.684420   16719 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed "
    "call to cuInit: UNKNOWN ERROR (303)",
    "E0000 00:00:1795985293.244951   16719 util.cc:131] oneDNN supports DT_INT64 only on platforms with AVX-512. "
    "Falling back to the default Eigen-based implementation if present.",
    "2026-11-29 10:00:00.000001: I external/local_tsl/tsl/cuda/cudart_stub.cc:32] Could not find cuda drivers",
]


@pytest.mark.parametrize("line", SEEN_NOISE[:-1])
def test_tensorflow_startup_chatter_is_noise(line):
    assert console.is_native_noise(line) and console.is_native_noise(line + "\n")


@pytest.mark.parametrize(
    "line",
    [
        "xlmp_jax.train: error: work directory '/ro' is not writable: Permission denied",
        "E0000 00:00:1795985271.684420   16719 gcs_file_system.cc:99] Error reading gs://bucket/x: PERMISSION_DENIED",
        "E0000 00:00:1795985271.684420   16719 cuda_platform.cc:52] out of memory allocating 1GiB",
        "F0000 00:00:1795985271.684420   16719 port.cc:153] Check failed: x != nullptr",
        "Traceback (most recent call last):",
        SEEN_NOISE[-1],  # another log format: not recognised, so kept (only known lines are dropped)
    ],
)
def test_other_lines_are_kept(line):
    assert not console.is_native_noise(line)


def test_filtered_stderr_drops_only_the_noise_even_when_the_block_raises(capfd):
    kept = "E0000 00:00:1.0   1 kernel.cc:7] a real problem\n"
    with pytest.raises(RuntimeError, match="boom"), console.filtered_stderr():
        os.write(2, (SEEN_NOISE[2] + "\n" + kept + SEEN_NOISE[0] + "\n").encode())
        sys.stderr.write("python's own line\n")
        raise RuntimeError("boom")
    err = capfd.readouterr().err  # (under capfd Python's sys.stderr bypasses descriptor 2: order may differ)
    assert sorted(err.splitlines(True)) == sorted([kept, "python's own line\n"]), err
    os.write(2, b"after the block\n")  # descriptor 2 is the console again
    assert capfd.readouterr().err == "after the block\n"


class _Pty(io.StringIO):
    """A terminal that does not know its size, like the pty of `script` (tqdm drew nothing there)."""

    def isatty(self) -> bool:
        return True

    def fileno(self) -> int:
        raise io.UnsupportedOperation("no descriptor")


def test_progress_bar_on_a_terminal_shows_step_loss_tokens_and_eta(monkeypatch, capsys):
    pty = _Pty()
    monkeypatch.setattr(sys, "stderr", pty)
    progress = console.Progress(start=0, total=10, active=True)
    assert progress.bar is not None
    progress.update(4)
    progress.log(4, {"loss": 7.25, "tokens_per_s": 1234.5, "learning_rate": 1e-3})
    progress.bar.refresh()
    progress.close()
    bar = pty.getvalue().split("\r")[-1]
    assert re.search(r"train: +40%.*4/10 \[\d\d:\d\d<\d\d:\d\d", bar), bar  # step / total and elapsed<ETA
    assert "loss=7.2500" in bar and "tok/s=1234.5" in bar, bar
    assert capsys.readouterr().out == "step 4: loss=7.2500, learning_rate=0.0010, tokens_per_s=1234.5\n"


def test_progress_without_a_terminal_is_plain_lines_with_eta(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    progress = console.Progress(start=2, total=12, active=True)
    assert progress.bar is None
    progress.began -= 10.0  # 10 s for steps 3..7: 5 steps left take another 10 s
    progress.log(7, {"loss": 3.5, "tokens_per_s": 99.0})
    progress.close()
    assert capsys.readouterr().out == "step 7: loss=3.5000, tokens_per_s=99.0, eta=0:00:10\n"
    assert sys.stderr.getvalue() == ""
    assert console.Progress(0, 5, active=True).eta(0) == "?"


@pytest.mark.slow
def test_train_cli_console_has_no_tensorflow_lines(tmp_path):
    """A short run in the environment a user has: nothing set to quiet TensorFlow, no GPU."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS", "XLA_FLAGS")
    }
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""))
    env.pop("CUDA_VISIBLE_DEVICES", None)
    cmd = [
        sys.executable,
        "-m",
        "xlmp_jax.train",
        "--config=configs/tiny.py",
        "--config.model.num_layers=1",
        "--config.model.pool.size=8",
        "--config.data.seq_length=32",
        "--config.data.shuffle_buffer=64",
        "--config.train.batch_size=8",
        "--config.train.steps=2",
        "--config.train.warmup_steps=1",
        "--config.train.log_every=1",
        "--config.train.eval_every=0",
        "--config.train.pool_report=False",
        f"--workdir={tmp_path / 'run'}",
    ]
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    lines = (proc.stdout + proc.stderr).splitlines()
    noise = [line for line in lines if NATIVE_LOG.match(line) or NOISE_WORDS.search(line)]
    assert not noise, "\n".join(noise)
    assert "step 2: loss=" in proc.stdout and ", eta=" in proc.stdout  # no terminal: plain lines with the ETA
    assert "step/s" not in proc.stderr  # and no bar


@pytest.mark.slow
def test_tensorflow_is_set_up_when_imported_and_not_before():
    """The trainer's TensorFlow set-up imports nothing; the first import of TensorFlow is quiet, GPUs hidden."""
    code = """
import sys
from xlmp_jax.runtime import console
console.hide_gpus_from_tensorflow_on_import()
console.hide_gpus_from_tensorflow_on_import()  # twice: one hook
assert "tensorflow" not in sys.modules
import tensorflow as tf
assert type(tf.__spec__.loader).__name__ == "_QuietTensorFlowLoader"
assert not any(type(f).__name__ == "_TensorFlowImportHook" for f in sys.meta_path)
assert tf.config.get_visible_devices("GPU") == [] and int(tf.constant(2) + 1) == 3
print("ok")
"""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS")}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout == "ok\n", proc.stdout + proc.stderr
    noise = [line for line in proc.stderr.splitlines() if NATIVE_LOG.match(line) or NOISE_WORDS.search(line)]
    assert not noise, "\n".join(noise)
