"""``summary.md`` in XTREME's layout: one column per task (its headline metric, averaged over test languages),
then one table per task with a column per language, each with its spread over fine-tuning seeds, and the
XLM-P minus baseline row with the interval ``seeds.arm_difference`` gives (over paired pre-training seeds,
else labelled fine-tuning noise only).

Scores are shown x100 as XTREME prints them. A language whose test set is English dev data (rows with
``in_english_dev`` = 1: XQuAD-en, TyDiQA-en) is shown with a dagger and left out of every mean. Only each work directory's latest step is summarised; work
directories pair across the arms in the order they are listed (the i-th XLM-P with the i-th baseline).
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np

from xlmp_jax.evals import seeds as seed_stats
from xlmp_jax.evals.context import split_list
from xlmp_jax.evals.results import Result

ARMS = (("xlmp", "XLM-P"), ("baseline", "baseline"))


def parse_headline(spec: str, tasks: Sequence[str]) -> dict[str, str]:
    """``'xnli:accuracy,ner:f1'`` -> {task: metric}; every task swept needs one."""
    headline = {}
    for item in split_list(spec):
        task, sep, metric = item.partition(":")
        if not sep or not task.strip() or not metric.strip():
            raise ValueError(f"headline item {item!r} is not 'task:metric'")
        headline[task.strip()] = metric.strip()
    missing = [t for t in tasks if t not in headline]
    if missing:
        raise ValueError(f"headline={spec!r} names no metric for task {missing[0]!r}")
    return headline


def _latest(rows: Sequence[Result]) -> list[Result]:
    latest: dict[str, int] = {}
    for r in rows:
        latest[r.workdir] = max(latest.get(r.workdir, r.step), r.step)
    return [r for r in rows if r.step == latest[r.workdir]]


def _pct(value: float, signed: bool = False) -> str:
    if not math.isfinite(value):
        return "n/a"
    return f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}"


def _spread_cell(values: Sequence[float]) -> str:
    if not values:
        return ""
    s = seed_stats.spread(values)
    return _pct(s.mean) if s.n == 1 else f"{_pct(s.mean)} ± {_pct(s.std)}"


def _difference_cell(diff: seed_stats.Difference | None) -> str:
    if diff is None:
        return ""
    s = diff.spread
    if s.n == 1:
        return _pct(s.mean, signed=True)
    return f"{_pct(s.mean, signed=True)} [{_pct(s.low, signed=True)}, {_pct(s.high, signed=True)}]"


def _difference(by_run: Mapping[str, list[float]], runs: Mapping[str, list[str]]) -> seed_stats.Difference | None:
    x = [by_run[w] for w in runs["xlmp"] if w in by_run]
    b = [by_run[w] for w in runs["baseline"] if w in by_run]
    if not x or not b or len(x) != len(b):
        return None
    try:
        return seed_stats.arm_difference(x, b)
    except ValueError:  # unequal fine-tuning seeds between the arms: no pairing to show
        return None


def render(rows: Sequence[Result], tasks: Sequence[str], headline: Mapping[str, str], workdirs: Sequence[str]) -> str:
    """The Markdown text of the XTREME summary of ``rows``."""
    rows = _latest(rows)
    order = {w: i for i, w in enumerate(workdirs)}
    runs: dict[str, list[str]] = {arm: [] for arm, _ in ARMS}
    for workdir, model in sorted({(r.workdir, r.model) for r in rows}, key=lambda wm: (order.get(wm[0], 1e9), wm[0])):
        runs.setdefault(model, []).append(workdir)
    # per (task, workdir, language): {seed: value} of the headline metric
    scores: dict[tuple[str, str, str], dict[int, float]] = defaultdict(dict)
    dev: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    flagged = {(r.eval, r.language) for r in rows if r.metric == "in_english_dev" and r.value}
    for r in rows:
        metric = headline.get(r.eval)
        if metric is None:
            continue
        if r.metric == metric and r.language != "all":
            scores[(r.eval, r.workdir, r.language)][r.seed] = r.value
        elif r.metric == f"dev_{metric}":
            dev[(r.eval, r.workdir)][r.seed] = r.value
    languages = {t: sorted({lang for (task, _, lang) in scores if task == t}) for t in tasks}
    averaged = {t: [lang for lang in languages[t] if (t, lang) not in flagged] for t in tasks}

    def task_means(task: str, workdir: str) -> list[float]:
        """Per fine-tuning seed: the mean over the task's test languages (seeds every language has), flagged
        ones left out."""
        per_lang = [scores[(task, workdir, lang)] for lang in averaged[task] if (task, workdir, lang) in scores]
        if not per_lang:
            return []
        common = sorted(set.intersection(*(set(p) for p in per_lang)))
        return [float(np.mean([p[s] for p in per_lang])) for s in common]

    name = lambda w: os.path.basename(os.path.normpath(w))  # noqa: E731
    lines = [
        "# XTREME summary",
        "",
        "Zero-shot cross-lingual transfer: fine-tuned on English, the checkpoint chosen on English dev, tested per "
        "language. A cell is the mean over fine-tuning seeds ± their standard deviation (x100); the XLM-P - "
        "baseline row gives the mean difference and its 95 % t-interval, over what its `interval over` row says.",
        "",
        "| arm | run | " + " | ".join(f"{t} ({headline[t]})" for t in tasks) + " | avg |",
        "| --- | --- |" + " --- |" * (len(tasks) + 1),
    ]
    avg_by_run: dict[str, list[float]] = {}
    for arm, label in ARMS:
        arm_cells: dict[str, list[float]] = defaultdict(list)
        for w in runs.get(arm, []):
            means = {t: task_means(t, w) for t in tasks}
            present = [float(np.mean(m)) for m in means.values() if m]
            if len(present) == len(tasks):
                avg_by_run[w] = [float(np.mean(present))]
            cells = [_spread_cell(means[t]) for t in tasks]
            lines.append(
                f"| {label} | {name(w)} | " + " | ".join(cells) + f" | {_spread_cell(avg_by_run.get(w, []))} |"
            )
            for t in tasks:
                if means[t]:
                    arm_cells[t].append(float(np.mean(means[t])))
        if len(runs.get(arm, [])) > 1:
            cells = [_spread_cell(arm_cells[t]) for t in tasks]
            avgs = [avg_by_run[w][0] for w in runs[arm] if w in avg_by_run]
            lines.append(
                f"| {label} | mean of {len(runs[arm])} pre-training seeds | "
                + " | ".join(cells)
                + f" | {_spread_cell(avgs)} |"
            )
    diffs = {t: _difference({w: task_means(t, w) for w in workdirs}, runs) for t in tasks}
    avg_diff = _difference(avg_by_run, runs)
    if any(d is not None for d in diffs.values()):
        lines.append(
            "| XLM-P - baseline | | "
            + " | ".join(_difference_cell(diffs[t]) for t in tasks)
            + f" | {_difference_cell(avg_diff)} |"
        )
        labels = [f"{d.over} (n={d.spread.n})" if d else "" for d in (*[diffs[t] for t in tasks], avg_diff)]
        lines.append("| interval over | | " + " | ".join(labels) + " |")
    lines.append("")

    for t in tasks:
        langs = languages[t]
        lines += [f"## {t} ({headline[t]})", ""]
        shown = [f"{lang} †" if (t, lang) in flagged else lang for lang in langs]
        lines.append("| arm | run | " + " | ".join(shown) + " | mean | en dev | seeds |")
        lines.append("| --- | --- |" + " --- |" * (len(langs) + 3))
        for arm, label in ARMS:
            for w in runs.get(arm, []):
                per_lang = [_spread_cell(list(scores.get((t, w, lang), {}).values())) for lang in langs]
                means = task_means(t, w)
                interval = ""
                if len(means) > 1:
                    s = seed_stats.spread(means)
                    interval = f" [{_pct(s.low)}, {_pct(s.high)}]"
                lines.append(
                    f"| {label} | {name(w)} | "
                    + " | ".join(per_lang)
                    + f" | {_spread_cell(means)}{interval} | {_spread_cell(list(dev.get((t, w), {}).values()))}"
                    + f" | {len(means)} |"
                )
        lang_diffs = [
            _difference({w: [v for _, v in sorted(scores.get((t, w, lang), {}).items())] for w in workdirs}, runs)
            for lang in langs
        ]
        if diffs[t] is not None:
            lines.append(
                "| XLM-P - baseline | | "
                + " | ".join(_difference_cell(d) for d in lang_diffs)
                + f" | {_difference_cell(diffs[t])} | | {diffs[t].over} |"
            )
        if any((t, lang) in flagged for lang in langs):
            lines += ["", "† test set is English dev data (used by no selection): shown, not in the mean."]
        lines.append("")
    return "\n".join(lines)
