"""Goodput accounting (xlmp_jax/training/goodput.py): the cursor's categories, redone steps, the records a kill leaves, the
summary over attempts, and the optional ml-goodput-measurement sink."""

import json
import sys
import types

import pytest

from xlmp_jax.training import goodput


def _attempt(workdir, clock, monkeypatch, steps, seconds_per_step=1.0):
    """An attempt on a fake clock: 2 s of start-up, then ``steps`` logged one by one."""
    account = goodput.Goodput(str(workdir), active=True, start_time=clock[0])
    clock[0] += 2.0
    account.charge("startup/config")
    for step in steps:
        clock[0] += seconds_per_step
        account.step_taken(step)
        account.charge_steps()
        account.write()
    return account


def test_attempts_add_up_and_steps_an_earlier_attempt_took_are_redone(tmp_path, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(goodput.time, "time", lambda: clock[0])
    _attempt(tmp_path, clock, monkeypatch, steps=[1, 2, 3, 4])  # "killed" after step 4, checkpoint at 2
    with open(tmp_path / goodput.FILE, "a") as f:
        f.write('{"attempt": 1, "sec')  # a line cut short by the kill is skipped
    clock[0] += 5.0
    second = _attempt(tmp_path, clock, monkeypatch, steps=[3, 4, 5, 6])
    assert second.attempt == 2
    second.write(final=True)
    records = goodput.read_records(str(tmp_path))
    assert [r["attempt"] for r in records] == [1] * 4 + [2] * 5 and records[-1]["final"]
    assert records[-1]["seconds"] == {"startup/config": 2.0, "redone_steps": 2.0, "steps": 2.0}
    summary = goodput.summarize(records)
    assert summary["attempts"] == 2 and summary["total_s"] == 2 * 6.0
    assert summary["seconds"] == {"startup/config": 4.0, "steps": 6.0, "redone_steps": 2.0}
    assert summary["goodput"] == 0.5
    line = goodput.describe(summary)
    assert line.startswith("goodput 50.0% of 12.0s over 2 attempts (steps 6.0s, start-up 4.0s, redone steps 2.0s)")


def test_an_inactive_process_writes_nothing(tmp_path):
    account = goodput.Goodput(str(tmp_path), active=False)
    account.charge("startup/config")
    account.write(final=True)
    assert not (tmp_path / goodput.FILE).exists()


def test_cloud_sink_records_job_and_steps_through_ml_goodput_measurement(tmp_path, monkeypatch):
    calls = []

    class Recorder:
        def __init__(self, job_name, logger_name, logging_enabled):
            calls.append(("init", job_name, logger_name, logging_enabled))

        def record_job_start_time(self, when):
            calls.append(("job_start", when.timestamp()))

        def record_step_start_time(self, step):
            calls.append(("step", step))

        def record_job_end_time(self):
            calls.append(("job_end",))

    package = types.ModuleType("ml_goodput_measurement")
    package.goodput = types.SimpleNamespace(GoodputRecorder=Recorder)
    monkeypatch.setitem(sys.modules, "ml_goodput_measurement", package)
    account = goodput.Goodput(str(tmp_path / "run7"), active=True, start_time=1234.5, cloud_logger="xlmp-goodput")
    (tmp_path / "run7").mkdir()
    account.step_taken(1)
    account.write(final=True)
    assert calls == [("init", "run7", "xlmp-goodput", True), ("job_start", 1234.5), ("step", 1), ("job_end",)]
    assert json.loads((tmp_path / "run7" / goodput.FILE).read_text())["final"]


def test_cloud_sink_without_the_package_names_the_setting(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ml_goodput_measurement", None)  # an import of it raises ImportError
    with pytest.raises(ValueError, match="train.goodput_cloud_logger='x' needs the ml-goodput-measurement package"):
        goodput.Goodput(str(tmp_path), active=True, cloud_logger="x")


def test_cli_prints_the_summary(tmp_path, capsys):
    assert goodput.main(["goodput", str(tmp_path)]) == 1
    account = goodput.Goodput(str(tmp_path), active=True)
    account.charge("startup/config")
    account.write(final=True)
    assert goodput.main(["goodput", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith("goodput 0.0% of ")
