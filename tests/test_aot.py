"""Compiling a run for a TPU slice on this machine (xlmp_jax.aot, xlmp_jax.runtime.tpu_topology, launch.layouts).

The report's arithmetic is checked on the 8 simulated CPU devices of conftest (always); the TPU compiler
itself on a v5e 2x2 slice when libtpu is installed (requirements.txt pins it), in process for tiny and as
the CLI for the fits / does-not-fit verdicts (slow).
"""

import importlib.util
import os
import subprocess
import sys

import jax
import pytest
from helpers import REPO

from launch import layouts
from xlmp_jax import aot, config_utils
from xlmp_jax.runtime import tpu_topology

HAS_LIBTPU = importlib.util.find_spec("libtpu") is not None
needs_libtpu = pytest.mark.skipif(not HAS_LIBTPU, reason="libtpu is not installed (requirements.txt pins it)")
TINY = [
    "--config.model.num_layers=1",
    "--config.model.pool.size=8",
    "--config.data.seq_length=32",
    "--config.train.batch_size=16",
    "--config.train.eval_batch_size=16",
]


@pytest.mark.parametrize(
    "accelerator, name",
    [("v5litepod-256", "v5e:16x16"), ("v5litepod-64", "v5e:8x8"), ("v4-32", "v4:2x2x4"), ("v4-8", "v4:2x2x1"),
     ("v5p-128", "v5p:4x4x4"), ("v6e-64", "v6e:8x8"), ("v5litepod-8", "v5e:2x4")],
)  # fmt: skip
def test_topology_names_match_the_launchers_device_counts(accelerator, name):
    from launch.accelerators import tpu_accelerator

    assert tpu_topology.topology_name(accelerator) == name
    dims = [int(d) for d in name.split(":")[1].split("x")]
    assert dims[0] * dims[1] * (dims[2] if len(dims) > 2 else 1) == tpu_accelerator(accelerator).num_devices


@pytest.mark.parametrize("bad", ["v3-8", "v5litepod-12", "v4-12", "tpu"])
def test_bad_topology_is_named(bad):
    with pytest.raises(ValueError, match=bad):
        tpu_topology.topology_name(bad)


def test_layouts_table_overrides_and_user_precedence():
    assert layouts.layout_overrides("configs/large_baseline.py", "v5litepod-256") == [
        "--config.mesh.data=1",
        "--config.mesh.fsdp=-1",
        "--config.mesh.tensor=1",
        "--config.model.scan_layers=True",
        "--config.model.remat=dots_no_batch",
    ]
    mine = layouts.layout_overrides("configs/large.py", "v5litepod-256", ["--config.mesh.tensor=4"])
    assert mine == ["--config.model.scan_layers=True", "--config.model.remat=dots_no_batch"]  # the mesh is the user's
    assert layouts.layout_overrides("configs/tiny.py", "v5litepod-256") == []
    assert layouts.layout_overrides("configs/base.py", "v4-8") == []
    run = aot.load_run("configs/base.py", ["--config.model.remat=none"], "v4-32", 2)
    assert (run.mesh.fsdp, run.mesh.dcn_data, run.model.remat, run.train.grad_accum_steps) == (-1, 2, "none", 2)


def test_every_table_entry_resolves_and_splits_its_batch():
    from launch import preflight
    from launch.accelerators import tpu_accelerator

    for family, accelerator in layouts.LAYOUTS:
        for name in (family, f"{family}_baseline"):
            run = aot.load_run(f"configs/{name}.py", [], accelerator, 1)
            accel = tpu_accelerator(accelerator)
            preflight.check_batch(run, preflight.resolve_mesh(run, accel), accel)


def test_batch_spec_is_the_pipelines_format():
    from data_pipelines.batch_format import BATCH_KEYS

    assert tuple(aot.batch_spec(4, 8)) == BATCH_KEYS


def test_report_on_8_cpu_devices():
    """The whole analysis (train and eval step, memory, FLOPs, collectives, roofline) on simulated devices."""
    run = config_utils.load_run("configs/tiny.py", TINY + ["--config.mesh.data=4", "--config.mesh.fsdp=2"])
    fast = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}  # CPU codegen only
    r = aot.analyse(run, "v5litepod-8", devices=jax.devices(), compiler_options=fast)
    m = r["memory"]
    assert r["mesh"] == {"data": 4, "fsdp": 2, "tensor": 1} and r["num_devices"] == 8
    assert m["total"] == m["arguments"] + m["outputs"] + m["temporaries"] - m["aliased"] > 0
    assert 0.2 < m["total"] / r["plan_total"] < 5
    assert r["flops"] / r["formula_flops"] == pytest.approx(1.0, abs=0.5)
    c = r["collectives"]
    assert c["total"] > 0 and c["all-gather"] > 0  # fsdp=2 gathers the weights
    t = r["roofline"]
    assert t["bound_s"] == max(t["terms_s"].values()) and t["terms_s"][t["limited_by"]] == t["bound_s"]
    assert r["tokens_per_s_bound"] == pytest.approx(16 * 32 / t["bound_s"])
    assert r["fits"] and aot.verdict(r).startswith("fits: v5litepod-8 x1")
    assert r["eval"]["memory"]["total"] > 0
    text = aot.format_report(r)
    assert "HBM" in text and f"{t['limited_by']}-bound" in text


def test_cli_errors_exit_1_naming_the_value(capsys):
    assert aot.main(["--config=configs/tiny.py", "--topology=v9-8"]) == aot.FAILED
    assert "v9-8" in capsys.readouterr().err
    assert aot.main(["--config=configs/tiny.py", "--topology=v5litepod-4", "--config.train.nope=1"]) == aot.FAILED
    assert "nope" in capsys.readouterr().err
    assert aot.main(["--config=configs/tiny.py", "--topology=v5litepod-4", "--dcn_gbps=-1"]) == aot.FAILED
    assert "--dcn_gbps=-1" in capsys.readouterr().err


def test_overshoot_keeps_the_compilers_numbers():
    msg = (
        "RESOURCE_EXHAUSTED: XLA:TPU compile permanent error. Ran out of memory in memory space hbm. "
        "Used 20.5G of 15.75G hbm. Exceeded hbm capacity by 4.75G.\n\nTotal hbm usage >= 20.5G:\n  reserved 1M"
    )
    assert "Exceeded hbm capacity by 4.75G" in aot.overshoot(msg)


@needs_libtpu
@pytest.mark.slow
def test_tiny_compiles_for_a_v5e_2x2_slice(monkeypatch):
    for name, value in (("TPU_SKIP_MDS_QUERY", "1"), ("TPU_ACCELERATOR_TYPE", "v5litepod-4"),
                        ("TPU_WORKER_HOSTNAMES", "localhost"), ("TPU_LOG_DIR", "disabled")):  # fmt: skip
        monkeypatch.setenv(name, value)
    run = config_utils.load_run("configs/tiny.py", TINY)
    r = aot.analyse(run, "v5litepod-4", eval_step=False)
    assert r["device_kind"] == "TPU v5 lite" and r["num_devices"] == 4 and r["mesh"]["data"] == 4
    assert r["fits"] and 0 < r["memory"]["total"] < 2**30
    assert r["flops"] / r["formula_flops"] == pytest.approx(1.0, abs=0.5)
    assert r["collectives"]["all-reduce"] > 0  # the data-parallel gradient reduction


@needs_libtpu
@pytest.mark.slow
def test_two_slices_time_the_cross_slice_reduction_on_dcn(monkeypatch):
    for name, value in (("TPU_SKIP_MDS_QUERY", "1"), ("TPU_ACCELERATOR_TYPE", "v5litepod-4"),
                        ("TPU_WORKER_HOSTNAMES", "localhost"), ("TPU_LOG_DIR", "disabled")):  # fmt: skip
        monkeypatch.setenv(name, value)
    run = aot.load_run("configs/tiny.py", TINY + ["--config.mesh.data=1", "--config.mesh.fsdp=-1"], "v5litepod-4", 2)
    r = aot.analyse(run, "v5litepod-4", 2, eval_step=False)
    assert r["mesh"] == {"data": 2, "fsdp": 4, "tensor": 1} and r["num_slices"] == 2
    c, t = r["collectives"], r["roofline"]["terms_s"]
    assert 0 < c["dcn"] < c["total"]  # the data axis spans the slices; the FSDP gathers stay inside one
    chip = tpu_topology.CHIPS["v5e"]
    assert t["dcn"] == pytest.approx(c["dcn"] / chip.dcn_bandwidth)
    assert t["ici"] == pytest.approx((c["total"] - c["dcn"]) / chip.ici_send_bandwidth)
    assert "cross slices (DCN)" in aot.format_report(r)


def _cli(args, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
    env.update(PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""), TPU_LOG_DIR=str(tmp_path / "logs"))
    cmd = [sys.executable, "-m", "xlmp_jax.aot", "--config=configs/tiny.py", *args]
    return subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@needs_libtpu
def test_cli_verdicts_fits_and_does_not_fit(tmp_path):
    ok = _cli(["--topology=v5litepod-4", *TINY, f"--json={tmp_path / 'r.json'}"], tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.splitlines()[-1].startswith("fits: v5litepod-4 x1")
    assert "eval step compiled" in ok.stdout and (tmp_path / "r.json").exists()
    noise = [line for line in (ok.stdout + ok.stderr).splitlines() if "TPU_" in line or "InitGoogle" in line]
    assert not noise, noise  # libtpu's start-up warnings stay off the console
    big = _cli(["--topology=v5litepod-4", "--config.train.batch_size=262144", "--config.model.num_layers=1",
                "--config.model.pool.size=8", "--no_eval"], tmp_path)  # fmt: skip
    assert big.returncode == aot.DOES_NOT_FIT, big.stdout + big.stderr
    line = big.stdout.splitlines()[-1]
    assert line.startswith("does not fit: v5litepod-4") and "exceeds available HBM" in line, line


def test_table_layouts_extrapolation_and_markdown():
    from bench import aot_table

    labels = [label for label, _ in aot_table.layouts_for("large", "v5litepod-256", ["launcher", "fsdp"], ["none"])]
    assert labels == ["launcher", "fsdp/none"]
    assert [lab for lab, _ in aot_table.layouts_for("large_baseline", "v4-32", ["launcher", "data"], ["none"])] == [
        "launcher"
    ]
    with pytest.raises(ValueError, match="'mystery'"):
        aot_table.layouts_for("base", "v4-32", ["mystery"], ["none"])
    a, b = {"flops": 3.0, "memory.total": 10.0}, {"flops": 5.0, "memory.total": 12.0}
    assert aot_table.extrapolate(a, 1, b, 2, 24) == {"flops": 49.0, "memory.total": 56.0}
    row = {
        "config": "large", "topology": "v5litepod-256", "layout": "launcher", "mesh": {"data": 1, "fsdp": 256, "tensor": 1},
        "remat": "full", "grad_accum_steps": 1, "hbm_bytes": 16 * 2**30, "plan_total": 4 * 2**30, "fits": True,
        "estimate": {"memory.total": 2 * 2**30, "collectives.total": 1e9, "compile_s": 100.0},
        "roofline": {"terms_s": {"compute": 0.1, "hbm": 0.2, "ici": 0.05}, "bound_s": 0.2, "limited_by": "hbm"},
        "tokens_per_s_bound": 5e6,
    }  # fmt: skip
    refused = {k: v for k, v in row.items() if k not in ("estimate", "roofline", "tokens_per_s_bound")}
    refused.update(layout="data/none", fits=False, compiled_at=24)
    text = aot_table.markdown([row, refused], None)
    assert "| data/none | 1,256,1 | full | 1 | > HBM at 24 layer(s) | 16 |" in text
    assert "| large | v5litepod-256 | launcher | 1,256,1 | full | 1 | 2.00 | 16 | 4.00 | 0.50 | yes | 1.00 |" in text
    assert "* large on v5litepod-256: launcher (5,000,000 tokens/s bound)" in text
