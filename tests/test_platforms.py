"""No libtpu probe where no TPU is attached (xlmp_jax.runtime.platforms): the console stays as quiet as without libtpu."""

import importlib.util
import os
import re
import subprocess
import sys

import pytest
from helpers import REPO

from xlmp_jax.runtime import platforms

# libtpu's start-up lines on a machine without a TPU (libtpu 0.0.42.1), and absl's native log format.
LIBTPU_NOISE = re.compile(r"TPU_|libtpu|InitGoogle|Source Location Trace|worker hostname|^[IWEF]\d{4} ")


def test_nothing_changes_when_platforms_are_chosen(monkeypatch):
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    assert platforms.platforms_without_absent_tpu() is None
    monkeypatch.setattr(platforms, "_platforms_chosen", lambda: False)
    monkeypatch.setenv("JAX_FORCE_TPU_INIT", "1")
    assert platforms.platforms_without_absent_tpu() is None


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="libtpu is not installed")
def test_cpu_console_has_no_libtpu_lines():
    """What a user's script sees: JAX_PLATFORMS unset, libtpu installed, no TPU; import xlmp_jax, ask JAX."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "TPU_")) and k != "XLA_FLAGS"}
    env.update(PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""), CUDA_VISIBLE_DEVICES="")
    code = "import xlmp_jax, jax; print(jax.devices()[0].platform)"
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "cpu"
    noise = [line for line in (proc.stdout + proc.stderr).splitlines() if LIBTPU_NOISE.search(line)]
    assert not noise, "\n".join(noise)


def test_hidden_gpus_mean_cpu(monkeypatch):
    monkeypatch.delenv("JAX_FORCE_TPU_INIT", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setattr(platforms, "_platforms_chosen", lambda: False)
    monkeypatch.setattr(platforms.importlib.util, "find_spec", lambda name: object())  # libtpu and CUDA "installed"
    monkeypatch.setattr(platforms, "_tpu_chips", lambda: 0)
    assert platforms.platforms_without_absent_tpu() == "cpu"
    monkeypatch.setattr(platforms, "_tpu_chips", lambda: 4)
    assert platforms.platforms_without_absent_tpu() is None  # a TPU VM: JAX chooses
