"""The train CLI and loop (xlmp_jax/train.py, trainer.py): exact resume after SIGKILL, multi-host, bad input.

The CLI runs are subprocesses (each sets its own JAX environment); they share a persistent compilation
cache, so only the first run of each program pays XLA's compile time.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from helpers import REPO

from xlmp_jax import config_utils
from xlmp_jax import train as train_lib
from xlmp_jax.runtime import compile_cache as compile_cache_lib
from xlmp_jax.runtime import faults
from xlmp_jax.runtime.preemption import Preemption
from xlmp_jax.training import checkpoint, checkpoint_read, trainer

# A small, fast variant of the tiny config: 1 layer, 8 prompts, 4 languages, 8 rows of 32 tokens, a log line every step.
FAST = [
    "--config=configs/tiny.py",
    "--config.model.num_layers=1",
    "--config.model.pool.size=8",
    "--config.data.seq_length=32",
    "--config.data.shuffle_buffer=64",
    "--config.data.languages=('en','de','ru','zh')",  # 4 of tiny's 20: a quicker pipeline build
    "--config.train.batch_size=8",
    "--config.train.warmup_steps=2",
    "--config.train.log_every=1",
    "--config.train.eval_every=0",
    "--config.train.pool_report=False",
]


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("jax_cache"))


def _env(devices: int, cache: str, **extra) -> dict:
    env = dict(os.environ)
    env.update(
        JAX_PLATFORMS="cpu",
        XLA_FLAGS="",  # the parent's 8 forced devices must not leak in: XLMP_NUM_CPU_DEVICES decides
        XLMP_NUM_CPU_DEVICES=str(devices),
        CUDA_VISIBLE_DEVICES="",
        TF_CPP_MIN_LOG_LEVEL="2",
        JAX_COMPILATION_CACHE_DIR=cache,
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
        PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
    )
    env.update(extra)
    return env


def _cmd(workdir, *args) -> list[str]:
    return [sys.executable, "-m", "xlmp_jax.train", *FAST, f"--workdir={workdir}", *args]


def _run(workdir, *args, devices=8, cache, timeout=600, **env) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        _cmd(workdir, *args), env=_env(devices, cache, **env), cwd=REPO, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def _losses(workdir) -> dict[int, float]:
    """step -> logged training loss, from metrics.jsonl (every step must be logged exactly once)."""
    losses = {}
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            record = json.loads(line)
            if "loss" in record:
                assert record["step"] not in losses, f"step {record['step']} logged twice"
                losses[record["step"]] = record["loss"]
    return losses


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _popen(workdir, *args, cache, **env) -> subprocess.Popen:
    return subprocess.Popen(
        _cmd(workdir, *args),
        env=_env(8, cache, **env),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen, timeout: float = 600) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=timeout)
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.slow
def test_sigkill_sigterm_and_resume_are_exact(tmp_path, compile_cache):
    """2k steps straight == k steps, SIGKILL mid-training, resume, SIGTERM (saves), resume to 2k.

    The faults are injected at named points (``XLMP_FAULTS``), so every case is hit on every run.
    """
    k = 3
    args = [f"--config.train.steps={2 * k}", f"--config.train.checkpoint_every={k}"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    first = _run(straight, *args, cache=compile_cache)
    assert "first step took" in first.stdout and "step 6: loss=" in first.stdout
    assert "start-up took" in first.stdout and "compile" in first.stdout

    # SIGKILL once step k + 1 is logged: checkpoint k is the last one, step k + 1 must be redone.
    proc = _popen(killed, *args, cache=compile_cache, XLMP_FAULTS=f"sigkill@after_log:{k + 1}")
    out, err = _finish(proc)
    assert proc.returncode == -signal.SIGKILL, out[-2000:] + err[-3000:]
    assert checkpoint_read.latest_step(str(killed)) == k and sorted(_losses(killed)) == list(range(1, k + 2))

    # Resume, and preempt it (SIGTERM) right after step k + 2: it logs that step, saves it and exits 143.
    proc = _popen(killed, *args, cache=compile_cache, XLMP_FAULTS=f"sigterm@after_step:{k + 2}")
    out, err = _finish(proc)
    assert proc.returncode == train_lib.PREEMPTED_EXIT, out[-2000:] + err[-3000:]
    assert f"resumed from {killed / 'checkpoints' / str(k)} (step {k})" in out
    assert f"SIGTERM: saved checkpoint {killed / 'checkpoints' / str(k + 2)}" in out
    assert checkpoint_read.latest_step(str(killed)) == k + 2
    assert sorted(_losses(killed)) == list(range(1, k + 3))  # the preempted step's metrics are logged

    resumed = _run(killed, *args, cache=compile_cache)
    assert f"resumed from {killed / 'checkpoints' / str(k + 2)} (step {k + 2})" in resumed.stdout
    a, b = _losses(straight), _losses(killed)
    assert sorted(a) == list(range(1, 2 * k + 1))
    assert b == a  # every step logged once, bit-identical to the uninterrupted run
    # The resumed run's config and checkpoints are all there; the checkpoint holds the config and the data state.
    assert config_utils.read_config_json(str(killed)).train.steps == 2 * k
    assert {k + 2, 2 * k} <= set(checkpoint_read.all_steps(str(killed)))  # keep-last-N may drop step k
    assert os.listdir(killed / "checkpoints" / str(2 * k) / "data")
    assert os.listdir(killed / "tb")


def _snapshot(workdir) -> dict[str, bytes]:
    """Every file under ``workdir`` (path -> bytes): what a stopped start-up must leave unchanged."""
    files = {}
    for root, _, names in os.walk(workdir):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, workdir)] = f.read()
    return files


@pytest.mark.slow
def test_sigterm_during_startup_stops_at_each_phase_and_touches_nothing(tmp_path, compile_cache):
    """A SIGTERM at every start-up boundary of a resume: exit 143, a line saying so, the work directory intact."""
    workdir = tmp_path / "run"
    _run(workdir, "--config.train.steps=2", "--config.train.checkpoint_every=2", cache=compile_cache)
    before = _snapshot(workdir)
    assert "metrics.jsonl" in before and "config.json" in before
    for phase in faults.STARTUP_POINTS:
        proc = _popen(workdir, "--config.train.steps=4", cache=compile_cache, XLMP_FAULTS=f"sigterm@{phase}")
        out, err = _finish(proc)
        assert proc.returncode == train_lib.PREEMPTED_EXIT, (phase, out[-2000:] + err[-3000:])
        name = phase.removeprefix("after_")
        assert f"SIGTERM during start-up (after {name}): nothing new needed saving; stopped" in out, out[-2000:]
        assert _snapshot(workdir) == before, phase


@pytest.mark.slow
def test_external_sigterm_after_the_first_line_is_a_clean_stop(tmp_path, compile_cache):
    """The first console line is the readiness signal: a real SIGTERM sent then exits 143, never -15."""
    proc = _popen(tmp_path / "run", "--config.train.steps=2", cache=compile_cache)
    try:
        first_line = proc.stdout.readline()
        assert first_line.startswith("xlmp_jax.train: mesh"), first_line + proc.stderr.read()[-3000:]
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=600)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == train_lib.PREEMPTED_EXIT, out[-2000:] + err[-3000:]
    assert "SIGTERM during start-up" in out and "nothing new needed saving" in out
    assert not os.path.exists(tmp_path / "run" / "checkpoints" / "1")


def test_train_arms_sigterm_first_and_restores_the_handler(tmp_path, monkeypatch):
    """In-process: a SIGTERM right after the config checks stops ``train`` there; the caller's handler is back."""
    monkeypatch.setenv(faults.ENV, "sigterm@after_config")
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(train_lib.Preempted, match=r"after config\): nothing new needed saving"):
        train_lib.train(_config(), str(tmp_path))
    assert signal.getsignal(signal.SIGTERM) is previous
    assert os.listdir(tmp_path) == []  # not even config.json


@pytest.mark.parametrize(
    "spec, message",
    [
        ("sigterm", "bad entry 'sigterm': the signal must be one of"),
        ("sighup@after_step", "bad entry 'sighup@after_step': the signal must be one of"),
        ("sigterm@after_lunch", "bad entry 'sigterm@after_lunch': the point must be one of"),
        ("sigkill@after_step:x", "bad entry 'sigkill@after_step:x': the step after ':' must be"),
    ],
)
def test_fault_spec_errors_name_the_entry(spec, message):
    with pytest.raises(ValueError, match=message):
        faults.parse(spec)


def test_fault_injector_signals_only_at_its_point_and_step():
    spec = "sigterm@after_step:2,sigterm@after_data"
    assert faults.parse(spec) == (
        faults.Fault(signal.SIGTERM, "after_step", 2),
        faults.Fault(signal.SIGTERM, "after_data", None),
    )
    with Preemption() as preemption:
        inject = faults.FaultInjector(spec)
        inject("after_step", 1)
        inject("after_config")
        assert not preemption.requested
        inject("after_step", 2)
        assert preemption.requested
        with pytest.raises(train_lib.Preempted, match="after data"):
            preemption.check_startup("data")


@pytest.mark.slow
def test_two_processes_match_one(tmp_path, compile_cache):
    """2 processes x 4 CPU devices = one 8-device mesh; stop at 2, resume to 4; equal to 1 process x 8 devices."""
    args = ["--config.train.steps=4", "--config.train.checkpoint_every=2"]
    single, multi = tmp_path / "single", tmp_path / "multi"
    _run(single, *args, "--config.train.data_shards=2", cache=compile_cache)

    def two_processes(*extra):
        port = _free_port()
        procs = [
            subprocess.Popen(
                _cmd(multi, *args, *extra, f"--coordinator_address=localhost:{port}", "--num_processes=2")
                + [f"--process_id={i}"],
                env=_env(4, compile_cache),
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(2)
        ]
        outs = [p.communicate(timeout=600) for p in procs]
        for p, (out, err) in zip(procs, outs, strict=True):
            assert p.returncode == 0, out[-3000:] + err[-5000:]
        return outs

    first = two_processes("--config.train.stop_after=2")
    assert "2 process(es)" in first[0][0] and "mesh {'data': 8" in first[0][0]
    assert "xlmp_jax.train" not in first[1][0] and "loss=" not in first[1][0]  # only process 0 reports
    assert checkpoint_read.all_steps(str(multi)) == [2]
    second = two_processes()
    assert f"resumed from {multi / 'checkpoints' / '2'} (step 2)" in second[0][0]
    a, b = _losses(single), _losses(multi)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    np.testing.assert_allclose([b[s] for s in range(1, 5)], [a[s] for s in range(1, 5)], rtol=2e-5)
    # Both processes' input positions are in the checkpoint, and a single process can read them back.
    data_files = os.listdir(multi / "checkpoints" / "4" / "data")
    assert any("00000-of-00002" in f for f in data_files) and any("00001-of-00002" in f for f in data_files)


# ---------------------------------------------------------------------------------------------------------------
# Bad input: one clear error naming the value. In-process where the error comes before any compilation.


def _config(*overrides):
    return config_utils.load_config(
        "configs/tiny.py",
        [a.removeprefix("--config.") for a in FAST[1:]] + ["train.compilation_cache_dir="] + list(overrides),
    )


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["mesh.data=3"], "mesh.data=3, mesh.fsdp=1, mesh.tensor=1 needs 3 devices, but there are 8"),
        (["mesh.data=-1", "mesh.tensor=3"], "the fixed axes (3) do not divide the device count 8"),
        (["train.batch_size=12"], "train.batch_size=12 is not divisible by the data-parallel size 8"),
    ],
)
def test_bad_mesh_or_batch_names_the_value(tmp_path, overrides, message):
    with pytest.raises(ValueError) as e:
        train_lib.train(_config(*overrides), str(tmp_path))
    assert message in str(e.value)


def test_unwritable_workdir_names_it(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(trainer.TrainError, match=f"work directory '{blocker}/run' is not writable"):
        train_lib.train(_config(), str(blocker / "run"))


def test_cli_errors_are_one_clear_line(tmp_path, compile_cache):
    env = _env(1, compile_cache)
    missing = subprocess.run(
        [sys.executable, "-m", "xlmp_jax.train", "--config=configs/nope.py", f"--workdir={tmp_path}"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 2
    assert "xlmp_jax.train: error: config file not found: 'configs/nope.py'" in missing.stderr
    unknown = subprocess.run(
        _cmd(tmp_path, "--config.train.stepz=3"), env=env, cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert unknown.returncode == 2 and "unknown config field train.stepz" in unknown.stderr, unknown.stderr[-2000:]
    assert not os.listdir(tmp_path)  # nothing was started


def test_incompatible_checkpoint_names_path_and_param(tmp_path):
    ckpt = checkpoint.Checkpointer(str(tmp_path))
    # A checkpoint whose pool has 8 prompts (written without training: only the shapes matter here).
    from helpers import init_state, mesh_of

    from xlmp_jax.training import sharding

    config = _config()
    state, _ = init_state(config, sharding.make_mesh(mesh_of(**config.mesh)), jax.random.key(0))
    ckpt.save(1, state, config=config)
    ckpt.close()
    with pytest.raises(checkpoint.IncompatibleCheckpointError) as e:
        train_lib.train(_config("model.pool.size=4"), str(tmp_path))
    assert str(tmp_path / "checkpoints" / "1") in str(e.value) and "params/pool/keys" in str(e.value)


def test_plan_prints_the_memory_plan(capsys):
    train_lib.print_plan(config_utils.load_run("configs/base.py"), 8)
    out = capsys.readouterr().out
    assert out.strip() and ("not available" in out or "GiB" in out)


# ---------------------------------------------------------------------------------------------------------------
# Compile once: the persistent compilation cache.


def _cache_line(stdout: str) -> tuple[int, int]:
    """(programs loaded from the cache, programs that asked it) from the start-up summary line."""
    match = re.search(r"(\d+) of (\d+) programs loaded from the compilation cache", stdout)
    assert match, stdout[-3000:]
    return int(match.group(1)), int(match.group(2))


def _cache_files(path) -> set[str]:
    return {f for f in os.listdir(path) if not f.endswith("-atime")}


@pytest.mark.slow
def test_a_restart_loads_every_program_from_the_configured_cache(tmp_path):
    """First run: every program compiles and is written; second run (a fresh workdir): every start-up
    program is a hit and nothing new is written."""
    cache = tmp_path / "cache"
    args = [
        "--config.train.steps=2",
        f"--config.train.compilation_cache_dir={cache}",
    ]
    env = {k: v for k, v in _env(1, "").items() if k != compile_cache_lib.ENV_DIR}
    runs = []
    for name in ("first", "second"):
        proc = subprocess.run(
            _cmd(tmp_path / name, *args), env=env, cwd=REPO, capture_output=True, text=True, timeout=600
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        runs.append((_cache_line(proc.stdout), _cache_files(cache)))
    (first_hits, first_requests), first_files = runs[0]
    (second_hits, second_requests), second_files = runs[1]
    assert first_hits == 0 and first_requests >= 2  # at least the init and the train step
    assert len(first_files) >= first_requests  # start-up's programs, and the loop's small ones
    assert (second_hits, second_requests) == (first_requests, first_requests)
    assert second_files == first_files  # nothing compiled anew


def test_cache_dir_precedence():
    home = os.path.expanduser("~")
    assert compile_cache_lib.resolve_dir("~/c", {}) == os.path.join(home, "c")
    assert compile_cache_lib.resolve_dir("", {}) is None  # '' = off
    assert compile_cache_lib.resolve_dir("", {compile_cache_lib.ENV_DIR: "/e"}) == "/e"  # the environment wins
    assert compile_cache_lib.resolve_dir("/c", {compile_cache_lib.ENV_DIR: "/e"}) == "/e"
    assert compile_cache_lib.resolve_dir("/c", {compile_cache_lib.ENV_DIR: ""}) == "/c"  # empty = unset
    default = config_utils.load_config("configs/tiny.py").train.compilation_cache_dir
    assert compile_cache_lib.resolve_dir(default, {}) == os.path.join(home, ".cache", "xlmp", "jax")


def test_unusable_cache_dir_names_the_setting(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(ValueError, match=f"compilation cache directory '{blocker}/cache' cannot be created"):
        compile_cache_lib.enable(str(blocker / "cache"), environ={})


@pytest.mark.slow
def test_profile_steps_write_a_trace_tensorboard_reads_and_goodput_accounts_the_run(tmp_path, capsys):
    import time

    from xlmp_jax.training import goodput

    began = time.time()
    trainer.train(_config("train.steps=3", "train.profile_steps=(2, 2)", "train.checkpoint_every=3"), str(tmp_path))
    ended = time.time()
    out = capsys.readouterr().out
    assert f"profile of steps 2-3 written to {tmp_path / 'tb'}" in out
    traces = list((tmp_path / "tb" / "plugins" / "profile").glob("*/*.xplane.pb"))
    assert len(traces) == 1 and traces[0].stat().st_size > 0  # where TensorBoard's profile plugin looks
    assert b"train" in traces[0].read_bytes()  # the step annotations' name

    records = goodput.read_records(str(tmp_path))
    assert records[-1]["final"] and records[-1]["step"] == 3 and {r["attempt"] for r in records} == {1}
    seconds = records[-1]["seconds"]
    assert {"startup/process", "startup/config", "startup/data", "compile", "steps", "checkpoint_save"} <= set(seconds)
    assert "redone_steps" not in seconds and all(v >= 0 for v in seconds.values())
    # in-process, the account runs from the call to the final record (the CLI starts it at its process' start)
    total = records[-1]["total_s"]
    assert ended - began - 0.5 <= total <= ended - began
    assert f"goodput {100 * seconds['steps'] / total:.1f}% of {total:.1f}s over 1 attempt" in out
