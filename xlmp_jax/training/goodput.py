"""Goodput: where a run's wall time went, attempt by attempt, in ``DIR/goodput.jsonl``.

Each process of an attempt (a start of the trainer, fresh or resumed) moves one cursor through time:
``charge(category)`` books everything since the previous charge to ``category``, so the categories of an
attempt add up to its wall time from the moment the process started (before the imports) to its last record.
Categories: ``startup/<phase>`` (``process``: interpreter and imports; then the trainer's phases),
``checkpoint_restore``, ``compile``, ``steps`` (productive), ``redone_steps`` (steps an earlier attempt had
already taken before it died: the work a restore lost), ``eval``, ``checkpoint_save``. Process 0 appends
a cumulative record at every log step, eval, checkpoint and at the end, so a SIGKILL loses at most the time
since the last record. ``summarize`` adds the attempts up (``python -m xlmp_jax.training.goodput DIR`` prints it).

With ``train.goodput_cloud_logger`` set, the same run is also recorded through ``ml-goodput-measurement``
(Cloud Logging), whose calculator gives Google Cloud's own account of the job.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import time
from collections.abc import Iterable
from typing import Any

FILE = "goodput.jsonl"
PRODUCTIVE = "steps"


def process_start_time() -> float:
    """When this process started (Unix seconds): the imports before the trainer are part of the attempt."""
    try:
        import psutil  # optional: without it the attempt starts where the account does

        return float(psutil.Process().create_time())
    except Exception:  # noqa: BLE001 -- no psutil or no /proc: the attempt starts where the account does
        return time.time()


def read_records(workdir: str) -> list[dict]:
    """The records of ``DIR/goodput.jsonl``; a line cut short by a kill is skipped."""
    path = os.path.join(workdir, FILE)
    if not os.path.isfile(path):
        return []
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def summarize(records: Iterable[dict]) -> dict[str, Any]:
    """All attempts together: seconds per category (each attempt's last record), their total, the goodput
    (productive step time over the total) and the number of attempts."""
    last: dict[int, dict] = {}
    for record in records:
        last[record["attempt"]] = record
    seconds: dict[str, float] = {}
    for record in last.values():
        for category, value in record["seconds"].items():
            seconds[category] = seconds.get(category, 0.0) + value
    total = sum(seconds.values())
    return {
        "attempts": len(last),
        "seconds": seconds,
        "total_s": total,
        "goodput": seconds.get(PRODUCTIVE, 0.0) / total if total else 0.0,
    }


def describe(summary: dict[str, Any]) -> str:
    """One line: the goodput and the largest categories."""
    seconds = summary["seconds"]
    startup = sum(v for k, v in seconds.items() if k.startswith("startup/"))
    parts = {"start-up": startup, **{k: v for k, v in seconds.items() if not k.startswith("startup/")}}
    shown = ", ".join(f"{k.replace('_', ' ')} {v:.1f}s" for k, v in sorted(parts.items(), key=lambda kv: -kv[1]) if v)
    attempts = summary["attempts"]
    return (
        f"goodput {100 * summary['goodput']:.1f}% of {summary['total_s']:.1f}s over {attempts} "
        f"attempt{'s' if attempts != 1 else ''} ({shown})"
    )


class Goodput:
    """One attempt's account (module docstring). Only an ``active`` one (process 0) writes."""

    def __init__(self, workdir: str, *, active: bool, start_time: float | None = None, cloud_logger: str = ""):
        self.path = os.path.join(workdir, FILE)
        self.active = active
        previous = read_records(workdir)
        self.attempt = 1 + max((r["attempt"] for r in previous), default=0)
        self.done_before = max((r["max_step"] for r in previous), default=0)  # steps an earlier attempt reached
        self.start_time = process_start_time() if start_time is None else start_time
        self.seconds: dict[str, float] = {}
        self._cursor = self.start_time
        self._steps: list[int] = []  # steps taken since the last charge of step time
        self.step = self.max_step = 0
        if active:
            _end_cut_line(self.path)
        self._cloud = _CloudRecorder(cloud_logger, workdir) if cloud_logger and active else None
        if self._cloud:
            self._cloud.job_start(self.start_time)

    def charge(self, category: str) -> None:
        """Books the time since the previous charge to ``category``."""
        now = time.time()
        self.seconds[category] = self.seconds.get(category, 0.0) + max(now - self._cursor, 0.0)
        self._cursor = now

    def step_taken(self, step: int) -> None:
        """Step ``step`` was dispatched; its time is booked by the next ``charge_steps``."""
        self._steps.append(step)
        self.step, self.max_step = step, max(self.max_step, step)
        if self._cloud:
            self._cloud.step_start(step)

    def charge_steps(self) -> None:
        """Books the time since the previous charge to the steps taken since: shared between ``steps`` and
        ``redone_steps`` by how many of them an earlier attempt had already reached."""
        steps = self._steps
        if not steps:  # nothing to book: the time goes to the next charge
            return
        now = time.time()
        elapsed, redone = max(now - self._cursor, 0.0), sum(1 for s in steps if s <= self.done_before)
        for category, count in (("redone_steps", redone), (PRODUCTIVE, len(steps) - redone)):
            if count:
                self.seconds[category] = self.seconds.get(category, 0.0) + elapsed * count / len(steps)
        self._cursor, self._steps = now, []

    def write(self, *, final: bool = False) -> None:
        """Appends this attempt's cumulative record (flushed to the disk: it is what a kill leaves)."""
        if not self.active:
            return
        record = {
            "attempt": self.attempt,
            "start_time": round(self.start_time, 3),
            "time": round(self._cursor, 3),
            "step": self.step,
            "max_step": max(self.max_step, self.done_before),
            "seconds": {k: round(v, 4) for k, v in self.seconds.items()},
            "total_s": round(sum(self.seconds.values()), 4),
            "final": final,
        }
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        if final and self._cloud:
            self._cloud.job_end()


def _end_cut_line(path: str) -> None:
    """Ends a last line that a kill cut short, so this attempt's records start on lines of their own."""
    if os.path.isfile(path) and os.path.getsize(path):
        with open(path, "rb+") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")


class _CloudRecorder:
    """``ml-goodput-measurement``'s recorder: job start/end and each step's start, into Cloud Logging."""

    def __init__(self, logger_name: str, workdir: str):
        try:
            from ml_goodput_measurement import goodput as cloud_goodput  # optional package
        except ImportError as e:
            raise ValueError(
                f"train.goodput_cloud_logger={logger_name!r} needs the ml-goodput-measurement package "
                "(pip install ml-goodput-measurement), which is not installed"
            ) from e
        job = os.path.basename(os.path.normpath(workdir))
        self.recorder = cloud_goodput.GoodputRecorder(job_name=job, logger_name=logger_name, logging_enabled=True)

    def job_start(self, start_time: float) -> None:
        self.recorder.record_job_start_time(datetime.datetime.fromtimestamp(start_time, datetime.UTC))

    def step_start(self, step: int) -> None:
        self.recorder.record_step_start_time(step)

    def job_end(self) -> None:
        self.recorder.record_job_end_time()


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m xlmp_jax.training.goodput WORKDIR", file=sys.stderr)
        return 2
    records = read_records(argv[1])
    if not records:
        print(f"no {FILE} in {argv[1]!r}", file=sys.stderr)
        return 1
    summary = summarize(records)
    print(describe(summary))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
