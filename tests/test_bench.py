"""Smoke tests of the benchmark scripts: each runs one tiny step and prints its expected fields.

Benchmarks are run by command (see BENCHMARKS.md), not in CI; these only make sure they still run.
``train_throughput`` and ``profile_step`` run in this process (their ``--smoke`` measures in-process, on
one device); ``gpu_mfu`` and ``weak_scaling`` start worker processes by design (per-process memory
peaks, per-process device counts), so they run as subprocesses with their own environment.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import REPO


def _run(script: str, *args: str) -> dict:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "JAX_PLATFORMS": "cpu",
        "CUDA_VISIBLE_DEVICES": "",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "XLA_FLAGS": "",  # the scripts set their own device counts
    }
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), "--smoke", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, proc.stdout[-2000:]
    return json.loads(lines[-1][len("RESULT ") :])


@pytest.mark.slow
def test_train_throughput_smoke():
    from bench import train_throughput

    out = train_throughput.main(["--smoke", "--variants=torch,xlmp"])
    assert out["matmul_peak_gflops"]["median"] > 0
    rows = {r["variant"]: r for r in out["results"]}
    assert set(rows) == {"torch", "xlmp"}
    for r in rows.values():
        assert r["tokens_per_s"]["min"] <= r["tokens_per_s"]["median"] <= r["tokens_per_s"]["max"]
        assert r["flops_per_token"] > 0 and r["peak_rss_mib"] > 0
    assert rows["xlmp"]["head_positions"] < rows["torch"]["head_positions"] == 16  # sparse vs every position
    assert rows["xlmp"]["step_impl"] == "project"
    assert out["derived"]["tiny"]["ratio_as_users_run_it"] > 0


@pytest.mark.slow
def test_gpu_mfu_smoke_runs_on_cpu():
    out = _run("gpu_mfu.py")
    (r,) = out["results"]
    assert r["tokens_per_s"]["median"] > 0 and r["platform"] == "cpu"
    assert r["plan_bytes"] > 0 and out["matmul"]["median"] > 0


@pytest.mark.slow
def test_weak_scaling_smoke():
    out = _run("weak_scaling.py")
    rows = out["results"]
    assert [r["devices"] for r in rows] == [1, 2]
    assert all(r["xla_flops_per_device"] > 0 for r in rows)
    assert abs(rows[1]["flops_vs_1"] - 1.0) < 0.25  # per-device work stays flat


@pytest.mark.slow
def test_profile_step_smoke(tmp_path):
    from bench import profile_step

    out = profile_step.main(["--smoke", f"--trace_dir={tmp_path}"])
    assert out["traced_op_time_ms"] > 0
    assert out["top"] and {"name", "ms", "share", "count"} <= set(out["top"][0])
    assert abs(sum(out["by_category"].values()) - 1.0) < 0.01


@pytest.mark.slow
def test_tuning_ab_smoke_restores_the_tuned_code():
    from bench import tuning_ab
    from xlmp_jax.model import layers
    from xlmp_jax.training import losses

    tuned = (layers.add_bias, layers.Dropout, losses.mlm_loss)
    out = tuning_ab.main(["--smoke", "--arms=before,after,after@xlmp_nopool"])
    rows = {r["arm"]: r for r in out["results"]}
    assert rows["before"]["undone"] == list(tuning_ab.TUNINGS) and rows["after"]["undone"] == []
    assert all(r["step_s"]["min"] > 0 and np.isfinite(r["first_loss"]) for r in rows.values())
    assert (layers.add_bias, layers.Dropout, losses.mlm_loss) == tuned
    with tuning_ab.undone(("bias_gemv", "dropout_bits")):
        assert layers.add_bias is not tuned[0] and layers.Dropout is not tuned[1]


@pytest.mark.slow
def test_cpu_ops_smoke_times_every_op():
    from bench import cpu_ops

    out = cpu_ops.main(["--smoke"])
    ops = {r["op"]: r for r in out["results"]}
    assert len(ops) == 7 and all(r["seconds"] > 0 for r in ops.values())
    assert all(r["gflops"] > 0 for name, r in ops.items() if name.startswith("head"))


@pytest.mark.slow
def test_run_device_smoke_measures_every_issue28_config(tmp_path):
    """bench/run_device.sh --smoke: the whole device call on the CPU at tiny size, one entry per config."""
    from bench import gpu_mfu

    env = {**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": "", "XLA_FLAGS": "", "TMPDIR": str(tmp_path)}
    proc = subprocess.run(
        ["bash", str(REPO / "bench" / "run_device.sh"), "--smoke", str(tmp_path / "out")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads((tmp_path / "out" / "gpu_mfu.json").read_text())
    labels = gpu_mfu.PRESETS["issue28"].split(",")
    assert [r["label"] for r in out["results"]] == labels
    assert set(out["precompile"]) == set(labels)
    for r in out["results"]:
        assert "error" not in r, r
        for value in (r["tokens_per_s"]["median"], r["achieved_tflops"], r["mfu_measured_matmul"], r["plan_bytes"]):
            assert np.isfinite(value) and value > 0, r
        assert r["compiled_total_bytes"] > 0 and r["step_impl"] == "project"
    assert {r["feed"] for r in out["results"]} == {"device", "host", "prefetch"}
    prof = out["profile"]
    assert prof["label"] == out["best"] and prof["traced_op_time_ms"] > 0
    assert abs(sum(prof["by_group"].values()) - 1.0) < 0.01
    assert {"attention", "lm head + loss", "optimizer + grad norm", "host transfer"} <= set(prof["by_group"])


def test_the_config_walk_counts_files_and_returns_to_a_file_already_left():
    from bench import config_walk

    walk = config_walk.summary(["a.py", "b.py", "a.py", "c.py", "b.py"])
    assert (walk["files"], walk["returns"], walk["steps"]) == (3, 2, 5) and walk["visited"] == ["a.py", "b.py", "c.py"]


@pytest.mark.slow
def test_the_config_walk_follows_the_config_from_the_train_cli_to_the_step():
    from bench import config_walk

    order = config_walk.walk(str(REPO), "configs/tiny.py", sys.executable)
    assert order[0] == "xlmp_jax/run_config.py" and order[-1] == "xlmp_jax/training/steps.py"
    assert {"xlmp_jax/training/trainer.py", "data_pipelines/config.py", "data_pipelines/data_checks.py"} <= set(order)
    assert not any(name.startswith((".venv", "configs/")) for name in order)
    # The walk as the house left it (18 files, 10 returns; 19 and 15 before the rooms and the typed entry points):
    # a change that sends the config through more files, or back and forth more often, says so here.
    walk = config_walk.summary(order)
    assert walk["files"] <= 18 and walk["returns"] <= 10, walk
