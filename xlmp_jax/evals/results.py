"""The sweep's results: a manifest of finished cells, the tidy table (CSV + JSON), a Markdown summary and
TensorBoard scalars.

A *cell* is one (checkpoint, eval, settings) combination. ``OUT/cells.jsonl`` gets one line per finished
cell (its key and its rows), appended as soon as the cell is done, so an interrupted or extended sweep
recomputes nothing that is already there. The tidy table is rebuilt from the manifest each time.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from xlmp_jax.runtime.summary_writer import TensorBoardWriter

COLUMNS = ("workdir", "step", "model", "eval", "language", "metric", "value", "seed")


@dataclasses.dataclass(frozen=True)
class Result:
    """One row of the tidy table."""

    workdir: str
    step: int
    model: str  # "xlmp" or "baseline"
    eval: str
    language: str
    metric: str
    value: float
    seed: int = 0  # the fine-tuning seed of evals with ``seeds`` (else the sweep's seed)


class ResultStore:
    """Finished cells of one output directory (``OUT/cells.jsonl``)."""

    def __init__(self, out_dir: str):
        self.out_dir = out_dir
        os.makedirs(out_dir, exist_ok=True)
        self.manifest = os.path.join(out_dir, "cells.jsonl")
        self.cells: dict[str, list[Result]] = {}
        if os.path.exists(self.manifest):
            with open(self.manifest, encoding="utf-8") as f:
                for number, line in enumerate(f, start=1):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                        self.cells[record["key"]] = [Result(**r) for r in record["rows"]]
                    except (ValueError, KeyError, TypeError) as e:
                        raise ValueError(f"{self.manifest}:{number}: unreadable result record ({e})") from None

    def __contains__(self, key: str) -> bool:
        return key in self.cells

    def add(self, key: str, rows: Sequence[Result]) -> None:
        """Records a finished cell (appended and flushed at once)."""
        self.cells[key] = list(rows)
        with open(self.manifest, "a", encoding="utf-8") as f:
            f.write(json.dumps({"key": key, "rows": [dataclasses.asdict(r) for r in rows]}) + "\n")

    @property
    def rows(self) -> list[Result]:
        return [r for rows in self.cells.values() for r in rows]

    def write_tables(self) -> tuple[str, str]:
        """``results.csv`` and ``results.json`` (a list of row objects), sorted for stable diffs."""
        rows = sorted(self.rows, key=lambda r: (r.workdir, r.step, r.eval, r.language, r.metric, r.seed))
        csv_path = os.path.join(self.out_dir, "results.csv")
        with open(csv_path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(COLUMNS)
            for r in rows:
                writer.writerow([getattr(r, c) for c in COLUMNS])
        json_path = os.path.join(self.out_dir, "results.json")
        with open(json_path, "w", encoding="utf-8") as f:
            json.dump([dataclasses.asdict(r) for r in rows], f, indent=1)
        return csv_path, json_path

    def write_summary(self, render: Callable[[list[Result]], str] | None = None) -> str:
        """``summary.md``: per eval, one table of metric x language per checkpoint, then the XLM-P vs
        baseline comparison (latest step of each work directory, language-averaged) when both exist; or what
        ``render`` makes of the rows (``xtreme_summary``)."""
        path = os.path.join(self.out_dir, "summary.md")
        plots = sorted(
            os.path.relpath(os.path.join(d, n), self.out_dir)
            for d, _, names in os.walk(os.path.join(self.out_dir, "plots"))
            for n in names
            if n.endswith(".png")
        )
        with open(path, "w", encoding="utf-8") as f:
            f.write((render or markdown_summary)(self.rows))
            if plots:
                f.write("## Plots\n\n" + "".join(f"- [{p}]({p})\n" for p in plots))
        return path


def _label(workdir: str, step: int) -> str:
    return f"{os.path.basename(os.path.normpath(workdir))}@{step}"


def _fmt(value: float) -> str:
    return f"{value:.4g}" if np.isfinite(value) else str(value)


def seed_means(items: Iterable[tuple[tuple, float]]) -> dict[tuple, float]:
    """{key: mean of its values}: rows that differ only in their fine-tuning seed become their mean."""
    values: dict[tuple, list[float]] = defaultdict(list)
    for key, value in items:
        values[key].append(value)
    return {key: float(np.mean(v)) for key, v in values.items()}


def markdown_summary(rows: Iterable[Result]) -> str:
    rows = list(rows)
    lines = ["# Evaluation summary", ""]
    if not rows:
        return "\n".join([*lines, "No results yet.", ""])
    checkpoints = sorted({(r.workdir, r.step, r.model) for r in rows})
    lines += ["| checkpoint | model | work directory |", "| --- | --- | --- |"]
    lines += [f"| {_label(w, s)} | {m} | `{w}` |" for w, s, m in checkpoints]
    lines.append("")
    comparison = comparison_table(rows)
    if comparison:
        lines += ["## XLM-P vs baseline", "", *comparison, ""]
    for eval_name in sorted({r.eval for r in rows}):
        subset = [r for r in rows if r.eval == eval_name]
        columns = sorted({(r.workdir, r.step) for r in subset})
        keys = sorted({(r.metric, r.language) for r in subset})
        table = seed_means(((r.workdir, r.step, r.metric, r.language), r.value) for r in subset)
        lines += [f"## {eval_name}", ""]
        lines.append("| metric | language | " + " | ".join(_label(w, s) for w, s in columns) + " |")
        lines.append("| --- | --- |" + " --- |" * len(columns))
        for metric, lang in keys:
            cells = [_fmt(table[(w, s, metric, lang)]) if (w, s, metric, lang) in table else "" for w, s in columns]
            lines.append(f"| {metric} | {lang} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def comparison_table(rows: Sequence[Result]) -> list[str]:
    """Markdown lines comparing XLM-P and baseline (empty unless both are present).

    Per (eval, metric): each work directory's latest step; its ``all`` row if the eval has one, else the
    mean over its languages; then the mean over the work directories of each model type.
    """
    latest: dict[str, int] = {}
    for r in rows:
        latest[r.workdir] = max(latest.get(r.workdir, r.step), r.step)
    rows = [r for r in rows if r.step == latest[r.workdir]]
    if {r.model for r in rows} != {"xlmp", "baseline"}:
        return []
    grouped: dict[tuple[str, str, str, str], dict[str, float]] = defaultdict(dict)
    for (eval_name, metric, model, workdir, language), value in seed_means(
        ((r.eval, r.metric, r.model, r.workdir, r.language), r.value) for r in rows
    ).items():
        grouped[(eval_name, metric, model, workdir)][language] = value
    values: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for (eval_name, metric, model, _), by_language in grouped.items():
        value = by_language["all"] if "all" in by_language else float(np.mean(list(by_language.values())))
        values[(eval_name, metric, model)].append(value)
    out = ["| eval | metric | XLM-P | baseline | XLM-P - baseline |", "| --- | --- | --- | --- | --- |"]
    for eval_name, metric in sorted({k[:2] for k in values}):
        x, b = values.get((eval_name, metric, "xlmp")), values.get((eval_name, metric, "baseline"))
        xs = _fmt(float(np.mean(x))) if x else ""
        bs = _fmt(float(np.mean(b))) if b else ""
        delta = _fmt(float(np.mean(x)) - float(np.mean(b))) if x and b else ""
        out.append(f"| {eval_name} | {metric} | {xs} | {bs} | {delta} |")
    return out


def write_tensorboard(out_dir: str, rows: Sequence[Result]) -> str:
    """Scalars ``<eval>/<metric>/<language>`` at each checkpoint's step, one run per work directory."""
    root = os.path.join(out_dir, "tb")
    by_workdir: dict[str, dict[int, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        by_workdir[r.workdir][r.step][f"{r.eval}/{r.metric}/{r.language}"] = r.value
    for workdir, steps in by_workdir.items():
        name = os.path.basename(os.path.normpath(workdir)) or "run"
        writer = TensorBoardWriter(os.path.join(root, name))
        for step in sorted(steps):
            writer.write_scalars(step, steps[step])
        writer.flush()
        writer.close()
    return root
