"""One run per work directory (xlmp_jax/runtime/lease.py): refusal naming the holder, expiry takeover, heartbeat, release."""

import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest
from helpers import REPO

from xlmp_jax import config_utils
from xlmp_jax import train as train_lib
from xlmp_jax.runtime import lease, lease_store
from xlmp_jax.training import checkpoint_read


class Clock:
    """A settable clock: expiry without waiting."""

    def __init__(self, t: float = 1_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def _lease_file(workdir) -> dict:
    with open(os.path.join(workdir, lease_store.LEASE_FILE)) as f:
        return json.load(f)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_second_lease_is_refused_with_the_holder_named(tmp_path):
    clock = Clock()
    first = lease.Lease(str(tmp_path), ttl_s=60, clock=clock, host="vm-a", pid=os.getpid())
    first.acquire()
    record = _lease_file(tmp_path)
    assert (record["host"], record["pid"], record["expires"]) == ("vm-a", os.getpid(), clock.t + 60)

    clock.t += 15
    second = lease.Lease(str(tmp_path), ttl_s=60, clock=clock, host="vm-b", pid=12345)
    with pytest.raises(lease.LeaseHeld) as err:
        second.acquire()
    message = str(err.value)
    assert f"work directory {tmp_path} is in use by another run" in message
    assert f"host vm-a pid {os.getpid()}" in message
    assert "expires at 1970-01-12 13:47:40 UTC (in 45 s)" in message  # 1_000_060 s after the epoch
    assert not second.held and _lease_file(tmp_path)["host"] == "vm-a"


def test_an_expired_lease_is_taken_over_and_its_old_holder_finds_out(tmp_path):
    clock = Clock()
    old = lease.Lease(str(tmp_path), ttl_s=60, clock=clock, host="vm-a", pid=os.getpid())
    old.acquire()
    clock.t += 61  # vm-a was preempted; its replacement comes back as another host
    new = lease.Lease(str(tmp_path), ttl_s=60, clock=clock, host="vm-b", pid=os.getpid())
    new.acquire()
    assert new.held and _lease_file(tmp_path)["host"] == "vm-b"

    assert old.renew() is False and old.lost and not old.held  # its heartbeat learns it lost the lease
    old.release()  # and must not delete the new holder's lease
    assert _lease_file(tmp_path)["token"] == new.token
    new.release()
    assert not os.path.exists(tmp_path / lease_store.LEASE_FILE)


def test_a_dead_process_on_this_host_frees_the_lease_at_once_a_live_one_does_not(tmp_path):
    host, clock = socket.gethostname(), Clock()
    lease.Lease(str(tmp_path), ttl_s=600, clock=clock, host=host, pid=_dead_pid()).acquire()  # SIGKILLed run
    restart = lease.Lease(str(tmp_path), ttl_s=600, clock=clock, host=host)
    restart.acquire()  # long before the expiry
    assert _lease_file(tmp_path)["pid"] == os.getpid()
    restart.release()

    lease.Lease(str(tmp_path), ttl_s=600, clock=clock, host=host, pid=os.getppid()).acquire()  # alive
    with pytest.raises(lease.LeaseHeld, match=f"host {re.escape(host)} pid {os.getppid()}"):
        lease.Lease(str(tmp_path), ttl_s=600, clock=clock, host=host).acquire()


def test_an_unreadable_lease_file_is_taken_over(tmp_path):
    (tmp_path / lease_store.LEASE_FILE).write_text('{"host": "vm-a", "pi')  # a writer died mid-write
    taken = lease.Lease(str(tmp_path), ttl_s=60)
    taken.acquire()
    assert _lease_file(tmp_path)["token"] == taken.token


@pytest.mark.parametrize("make_store", [lease_store.LocalStore, lease_store.EpathStore])
def test_replace_is_a_compare_and_swap(tmp_path, make_store):
    """Two runs that both saw the same expired lease: only the first replacement wins (the epath store, used
    for gs:// without the GCS client, is checked on a local path: sequentially, it keeps the same rules)."""
    store = make_store(str(tmp_path))
    assert store.create("v0") and not store.create("other")
    text, version = store.read()
    assert text == "v0"
    assert store.replace("v1", version)
    assert not store.replace("v2", version) and store.read()[0] == "v1"
    assert not store.delete(version) and store.delete("v1") and store.read() is None


def test_heartbeat_renews_before_expiry_and_release_removes_it(tmp_path):
    held = lease.Lease(str(tmp_path), ttl_s=0.6, heartbeat_s=0.1)
    with held:
        first_expiry = _lease_file(tmp_path)["expires"]
        time.sleep(1.2)  # two ttls: without renewals the lease would have expired
        record = _lease_file(tmp_path)
        assert record["expires"] > first_expiry + 0.6 and record["expires"] > time.time()
        with pytest.raises(lease.LeaseHeld):
            lease.Lease(str(tmp_path), ttl_s=0.6, host="vm-b").acquire()
        assert not held.lost
    assert not os.path.exists(tmp_path / lease_store.LEASE_FILE)
    again = lease.Lease(str(tmp_path), ttl_s=60)  # free again
    again.acquire()
    again.release()


@pytest.mark.parametrize(
    ("args", "message"), [({"ttl_s": 0}, "ttl_s=0"), ({"ttl_s": 10, "heartbeat_s": 10}, "heartbeat_s=10")]
)
def test_bad_timings_name_the_value(tmp_path, args, message):
    with pytest.raises(ValueError, match=message):
        lease.Lease(str(tmp_path), **args)


def test_train_refuses_a_held_work_directory_before_building_anything(tmp_path):
    config = config_utils.load_config("configs/tiny.py", ["train.steps=40"])
    with lease.Lease(str(tmp_path), ttl_s=60):
        with pytest.raises(lease.LeaseHeld, match=f"pid {os.getpid()}"):
            train_lib.train(config, str(tmp_path))
    assert os.listdir(tmp_path) == []  # refused: no checkpoints, no config, and the holder's lease released


def test_second_trainer_cli_exits_2_naming_the_holder(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS="",
        PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )
    cmd = [
        sys.executable,
        "-m",
        "xlmp_jax.train",
        "--config=configs/tiny.py",
        "--config.train.steps=40",
        f"--workdir={workdir}",
    ]
    with lease.Lease(str(workdir), ttl_s=60):  # the first trainer, as far as the second can tell
        proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("xlmp_jax.train: error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert f"work directory {workdir} is in use by another run" in errors[0]
    assert f"host {socket.gethostname()} pid {os.getpid()}" in errors[0] and "expires at" in errors[0]
    assert "mesh" not in proc.stdout and sorted(os.listdir(workdir)) == []  # stopped before anything was built


def test_lease_check_raises_once_the_lease_was_taken_over(tmp_path):
    clock = Clock()
    held = lease.Lease(str(tmp_path), ttl_s=60, clock=clock, host="vm-a")
    held.acquire()
    held.check()  # still ours: nothing happens
    clock.t += 61
    lease.Lease(str(tmp_path), ttl_s=60, clock=clock, host="vm-b").acquire()
    assert not held.renew()
    with pytest.raises(lease.LeaseLost, match="lease was taken over by another run.*stopped without saving"):
        held.check()


@pytest.mark.slow
def test_training_stops_without_saving_once_its_lease_is_lost(tmp_path, monkeypatch):
    """The loop asks the lease before each step's writes: lost at step 3, nothing of step 3 or later is written."""
    calls, original = [], lease.Lease.check

    def check(self):  # as if the heartbeat had found the lease taken over just before step 3
        calls.append(1)
        if len(calls) == 3:
            self.lost = True
        original(self)

    monkeypatch.setattr(lease.Lease, "check", check)
    config = config_utils.load_config(
        "configs/tiny.py",
        [
            "model.num_layers=1",
            "model.pool.size=8",
            "data.seq_length=32",
            "data.shuffle_buffer=64",
            "data.languages=('en','de')",
            "train.batch_size=8",
            "train.steps=4",
            "train.warmup_steps=1",
            "train.log_every=1",
            "train.checkpoint_every=1",
            "train.eval_every=0",
            "train.pool_report=False",
        ],
    )
    with pytest.raises(lease.LeaseLost, match=f"work directory {tmp_path}"):
        train_lib.train(config, str(tmp_path))
    assert checkpoint_read.all_steps(str(tmp_path)) == [1, 2]
    with open(tmp_path / "metrics.jsonl") as f:
        assert sorted({json.loads(line)["step"] for line in f}) == [1, 2]
