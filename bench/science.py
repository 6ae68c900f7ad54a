"""The XLM-P experiment: the pool against the no-pool baseline at equal compute, paired seeds -> SCIENCE.md.

    python -m bench.science                      # the committed experiment (~40 min on 2 CPU cores)
    python -m bench.science --steps=40 --seeds=0 --ablation= --out=/tmp/sci --doc=/tmp/SCIENCE.md   # a smoke run

Both arms train the same config (``configs/tiny.py`` / ``configs/tiny_baseline.py`` plus ``EXPERIMENT``) on
the same data for the same steps and tokens; seed s of XLM-P is paired with seed s of the baseline (same
initial encoder draw and batch order). The ablation (seed 0 only) turns the pool options off one at a time.
Every run is then evaluated by the eval sweep on text no training split holds (the sample's leakage-free
splits): per-language MLM loss on validation lines, retrieval on held-out pairs, zero-shot fine-tuning on
held-out test lines, and the pool's clustering with its shuffle controls. Runs and sweep cells already
finished are reused, so an interrupted experiment continues where it stopped.

One file over 300 lines on purpose: it is one experiment read top to bottom (the arms, the runs, the sweep,
the statistics, the SCIENCE.md it writes), and each part only makes sense next to the others.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence

import numpy as np
from scipy import stats

from bench.common import REPO, machine_info
from configs.common import POOL_TRAINING
from configs.tiny import TINY_LANGUAGES

# Languages the experiment adds to the main job's 20 (`configs/tiny.py` keeps its own) so that scripts other
# than Latin hold >= 3 languages each, where the pool can only tell languages apart by something other than
# the script: Cyrillic ru + uk, bg, kk; Arabic script ar + fa, ug; Devanagari hi + mr, ne (each ~300 lines in
# the sample, no parallel pairs: MLM training and clustering only). Our choice.
EXTRA_LANGUAGES = ("uk", "bg", "kk", "fa", "ug", "mr", "ne")
# Shared by both arms: the tiny model on those languages, TLM on the *training* pairs (the
# retrieval pairs are held out) (`shuffle_buffer` > 0: a full reshuffle each epoch;
# the value is kept from the tf.data days, when it sized a buffer). Our choice.
EXPERIMENT = [
    "--config.train.steps=800",
    "--config.train.eval_every=0",
    "--config.train.checkpoint_every=800",
    "--config.train.log_every=100",
    "--config.data.tlm_rate=0.25",
    "--config.data.shuffle_buffer=1000",
    "--config.data.languages=(" + ",".join(f"'{lang}'" for lang in TINY_LANGUAGES + EXTRA_LANGUAGES) + ")",
]
# XLM-P's pool options: the configs' own (chosen a priori, not tuned on any eval), passed explicitly so that
# the report names them.
POOL_OPTIONS = dict(POOL_TRAINING)
# Ablation: the pool option(s) each variant turns back to the old behaviour.
ABLATIONS = {
    "no_key_loss": {"key_loss_weight": 0.0},
    "no_diversity_loss": {"diversity_loss_weight": 0.0},
    "small_prompt_init": {"prompt_init_std": 0.02},
    "old_pool": {"key_loss_weight": 0.0, "diversity_loss_weight": 0.0, "prompt_init_std": 0.02},
}
EVALS = "mlm,retrieval,pool,classification"
POOL_METRICS = (
    "ami_prompt_language",
    "ami_prompt_language_shuffled_p99",
    "ami_prompt_language_p_value",
    "ami_prompt_language_ci_low",
    "ami_prompt_language_ci_high",
    "ami_prompt_script",
    "ami_prompt_script_shuffled_p99",
    "mantel_r_script",
    "mantel_p_script",
    "mantel_r_family",
    "mantel_p_family",
    "mantel_p_family_within_script",
    "mantel_r_branch",
    "mantel_p_branch",
    "mantel_p_branch_within_script",
    "pool_fraction_top",
    "effective_prompts",
    "mean_input_entropy",
    "nmi_argmax_prompt",
)


# The pool eval's clusterers, each with the stem of its rows (``ami_<stem>_language`` / ``_script``): the pool's
# top prompt and the references on the same sentences (``xlmp_jax/evals/pool_references.py``).
CLUSTERERS = (
    ("prompt", "XLM-P: top prompt"),
    ("step0_prompt", "XLM-P at step 0: top prompt"),
    ("random_keys", "random keys (M) on the model's queries"),
    ("kmeans_query_kpool", "k-means of the model's query, k = M"),
    ("kmeans_query_klang", "k-means of the model's query, k = languages"),
    ("tfidf_kpool", "TF-IDF of token ids -> SVD -> k-means, k = M"),
    ("tfidf_klang", "TF-IDF of token ids -> SVD -> k-means, k = languages"),
    ("script", "script label alone (no model)"),
)


def languages() -> list[str]:
    return list(TINY_LANGUAGES + EXTRA_LANGUAGES)


def reference_pool_size() -> int:
    """XLM-P's pool size: the k the baseline's pool-size references use, so both arms compare at one k."""
    from configs.tiny import get_config

    return int(get_config().model.pool.size)


def runs(seeds: Sequence[int], ablation: Sequence[str]) -> list[dict]:
    """Every training run: name, config file, pool options, seed."""
    out = []
    for seed in seeds:
        out.append(dict(name=f"xlmp_s{seed}", arm="xlmp", config="configs/tiny.py", pool=POOL_OPTIONS, seed=seed))
        out.append(
            dict(name=f"baseline_s{seed}", arm="baseline", config="configs/tiny_baseline.py", pool={}, seed=seed)
        )
    for name in ablation:
        if name not in ABLATIONS:
            raise SystemExit(f"bench.science: unknown ablation {name!r}; known: {', '.join(ABLATIONS)}")
        options = {**POOL_OPTIONS, **ABLATIONS[name]}
        out.append(
            dict(name=f"xlmp_{name}_s{seeds[0]}", arm=name, config="configs/tiny.py", pool=options, seed=seeds[0])
        )
    return out


def train(run: dict, root: str, steps_override: list[str], env: dict) -> str:
    """Trains one run (skipped when its final checkpoint exists); returns its work directory."""
    from xlmp_jax import checkpoint_read

    workdir = os.path.join(root, run["name"])
    args = EXPERIMENT + steps_override
    steps = int([a for a in args if a.startswith("--config.train.steps=")][-1].split("=")[1])
    if checkpoint_read.latest_step(workdir) == steps:
        print(f"bench.science: {run['name']}: done already", flush=True)
        return workdir
    cmd = [sys.executable, "-m", "xlmp_jax.train", f"--config={run['config']}", f"--workdir={workdir}", *args]
    cmd += [f"--config.train.seed={run['seed']}"]
    cmd += [f"--config.model.pool.{k}={v}" for k, v in run["pool"].items()]
    began = time.perf_counter()
    print(f"bench.science: training {run['name']} ...", flush=True)
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"bench.science: {run['name']} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    print(f"bench.science: {run['name']} trained in {time.perf_counter() - began:.0f}s", flush=True)
    return workdir


def sweep(workdirs: Sequence[str], out: str, env: dict) -> list[dict]:
    """The eval sweep over every run's final checkpoint; returns its result rows."""
    langs = ",".join(languages())
    cmd = [
        sys.executable, "-m", "xlmp_jax.evaluate", "--config=configs/eval_sweep.py",
        f"--config.workdirs={','.join(workdirs)}", f"--config.out={out}", "--config.steps=latest",
        f"--config.evals={EVALS}", "--config.progress=False", f"--config.mlm.languages={langs}",
        f"--config.pool.languages={langs}", f"--config.pool.reference_pool_size={reference_pool_size()}",
    ]  # fmt: skip
    print(f"bench.science: eval sweep over {len(workdirs)} runs ...", flush=True)
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"bench.science: the eval sweep failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    with open(os.path.join(out, "results.json")) as f:
        return json.load(f)


# ----------------------------------------------------------------------------------------- statistics


def value(rows: list[dict], workdir: str, eval_name: str, language: str, metric: str) -> float:
    for r in rows:
        if r["workdir"] == workdir and r["eval"] == eval_name and r["language"] == language and r["metric"] == metric:
            return float(r["value"])
    return float("nan")


def paired(xlmp: Sequence[float], baseline: Sequence[float], level: float = 0.95) -> dict[str, float]:
    """Mean +- std of each arm and the paired difference's mean with its t interval (over seeds)."""
    x, b = np.asarray(xlmp, float), np.asarray(baseline, float)
    d = x - b
    n = len(d)
    half = stats.t.ppf(0.5 + level / 2, n - 1) * d.std(ddof=1) / np.sqrt(n) if n > 1 else float("nan")
    return dict(
        xlmp=x.mean(),
        xlmp_std=x.std(ddof=1) if n > 1 else 0.0,
        baseline=b.mean(),
        baseline_std=b.std(ddof=1) if n > 1 else 0.0,
        diff=d.mean(),
        diff_low=d.mean() - half,
        diff_high=d.mean() + half,
        n=n,
    )


def low_resource_half(langs: Sequence[str]) -> list[str]:
    """The half of ``langs`` with the fewest training lines in the sample (ties by name)."""
    from data_pipelines import sample

    sizes = sorted((len(sample.read_mono(lang, "train")), lang) for lang in langs)
    return sorted(lang for _, lang in sizes[: len(sizes) // 2])


def per_run_scalars(rows: list[dict], workdir: str, retrieval_langs: Sequence[str], low: Sequence[str]) -> dict:
    """The experiment's scalar outcomes of one run."""
    mlm = [value(rows, workdir, "mlm", lang, "loss") for lang in languages()]
    ret = {lang: value(rows, workdir, "retrieval", lang, "acc_mean") for lang in retrieval_langs}

    def mean_over_languages(metric: str) -> float:
        return float(np.nanmean([value(rows, workdir, "retrieval", lang, metric) for lang in retrieval_langs]))

    out = {
        "mlm_loss_mean": float(np.nanmean(mlm)),
        "retrieval_en_to_xx": mean_over_languages("acc_en_to_xx"),
        "retrieval_xx_to_en": mean_over_languages("acc_xx_to_en"),
        "retrieval_mean": float(np.nanmean(list(ret.values()))) if ret else float("nan"),
        "retrieval_low_resource": float(np.nanmean([ret[lang] for lang in low])) if low else float("nan"),
        "classification_zero_shot": value(rows, workdir, "classification", "all", "accuracy"),
    }
    for lang in languages():
        out[f"mlm_loss/{lang}"] = value(rows, workdir, "mlm", lang, "loss")
    for metric in POOL_METRICS:
        out[metric] = value(rows, workdir, "pool", "all", metric)
    return out


def pool_values(rows: list[dict], workdir: str) -> dict[str, float]:
    """Every pool-eval row of one run over all sentences or a script group, keyed ``<where>|<metric>``."""
    return {
        f"{r['language']}|{r['metric']}": float(r["value"])
        for r in rows
        if r["workdir"] == workdir and r["eval"] == "pool" and (r["language"] == "all" or ":" in r["language"])
    }


def retrieval_languages(rows: list[dict]) -> list[str]:
    return sorted({r["language"] for r in rows if r["eval"] == "retrieval" and r["language"] != "all"})


# ----------------------------------------------------------------------------------------- the report


def _f(v: float, digits: int = 3) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.{digits}f}"


def targets(main: dict[str, dict], scalars: dict[str, dict], xlmp_runs: list[str]) -> list[tuple[str, str, bool]]:
    """The issue's targets, each with the measured figure and whether it is met (means over XLM-P seeds)."""
    mean = {k: float(np.mean([scalars[r][k] for r in xlmp_runs])) for k in scalars[xlmp_runs[0]]}
    every = {k: [scalars[r][k] for r in xlmp_runs] for k in scalars[xlmp_runs[0]]}
    out = [
        (
            "AMI(top prompt, language) >= 0.65 and above its shuffles' 99th percentile (every seed)",
            f"{_f(mean['ami_prompt_language'])} (p99 of shuffles {_f(mean['ami_prompt_language_shuffled_p99'])})",
            mean["ami_prompt_language"] >= 0.65
            and all(
                a > p
                for a, p in zip(every["ami_prompt_language"], every["ami_prompt_language_shuffled_p99"], strict=True)
            ),
        ),
        (
            "AMI vs script higher than AMI vs language",
            f"{_f(mean['ami_prompt_script'])} vs {_f(mean['ami_prompt_language'])}",
            mean["ami_prompt_script"] > mean["ami_prompt_language"],
        ),
        (
            "routing distance follows script and family (Mantel p < 0.01, every seed)",
            f"script r={_f(mean['mantel_r_script'])} p<={_f(max(every['mantel_p_script']))}, "
            f"family r={_f(mean['mantel_r_family'])} p<={_f(max(every['mantel_p_family']))}",
            max(every["mantel_p_script"]) < 0.01 and max(every["mantel_p_family"]) < 0.01,
        ),
        (
            "at least half the pool is some input's top prompt",
            _f(mean["pool_fraction_top"]),
            mean["pool_fraction_top"] >= 0.5,
        ),
    ]
    ret = main["retrieval_mean"]
    if ret["baseline"] >= 0.10:
        low = main["retrieval_low_resource"]
        out.append(
            (
                "retrieval top-1 >= baseline + 2 points, interval excluding 0; >= baseline on the low-resource half",
                f"{_f(100 * ret['diff'], 1)} points [{_f(100 * ret['diff_low'], 1)}, {_f(100 * ret['diff_high'], 1)}]"
                f"; low-resource {_f(100 * low['diff'], 1)} points",
                ret["diff"] >= 0.02 and ret["diff_low"] > 0 and low["diff"] >= 0,
            )
        )
    else:
        out.append(
            (
                "retrieval (applies where the baseline's top-1 >= 10 %)",
                f"baseline top-1 {_f(100 * ret['baseline'], 1)} %: below 10 %, the target does not apply",
                True,
            )
        )
    mlm = main["mlm_loss_mean"]
    out.append(
        (
            "MLM loss no worse than the baseline's by more than 1 %",
            f"{_f(mlm['xlmp'])} vs {_f(mlm['baseline'])} ({_f(100 * mlm['diff'] / mlm['baseline'], 2)} %)",
            mlm["xlmp"] <= 1.01 * mlm["baseline"],
        )
    )
    return out


def _ami(pool: dict[str, dict], runs: Sequence[str], where: str, name: str) -> dict[str, float]:
    """``ami_<name>`` at ``where`` over runs: mean value and shuffled p99, and the widest per-run 95 % interval."""

    def get(suffix: str) -> np.ndarray:
        return np.asarray([pool[r].get(f"{where}|ami_{name}{suffix}", np.nan) for r in runs], float)

    def reduce(values: np.ndarray, how) -> float:
        return float(how(values)) if np.isfinite(values).any() else float("nan")

    return dict(
        value=reduce(get(""), np.nanmean),
        p99=reduce(get("_shuffled_p99"), np.nanmean),
        low=reduce(get("_ci_low"), np.nanmin),
        high=reduce(get("_ci_high"), np.nanmax),
    )


def _ami_cells(pool: dict[str, dict], runs: Sequence[str], where: str, name: str) -> str:
    """'value [low, high] | p99' of one AMI row (n/a where the arm has no such clusterer)."""
    a = _ami(pool, runs, where, name)
    if not np.isfinite(a["value"]):
        return "n/a | n/a"
    return f"{_f(a['value'])} [{_f(a['low'])}, {_f(a['high'])}] | {_f(a['p99'])}"


def reference_table(pool: dict[str, dict], xr: Sequence[str], br: Sequence[str]) -> list[str]:
    """The pool's AMI beside every reference's, on the same sentences, for both arms."""
    lines = [
        "",
        "## The pool against references on the same sentences (held-out validation lines)",
        "",
        f"Means over seeds; [ ] the widest of the per-seed 95 % bootstrap intervals; p99: the 99th percentile of "
        f"AMI under shuffled labels. M = {reference_pool_size()} (XLM-P's pool size; the baseline's references "
        "use the same k). The query is the pool's (the mean-pooled embedding output, also the baseline's).",
        "",
        "| clusterer | XLM-P arm: AMI vs language [CI] | p99 | AMI vs script | baseline arm: AMI vs language [CI] "
        "| p99 | AMI vs script |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for stem, label in CLUSTERERS:
        cells = []
        for runs in (xr, br):
            cells += [
                _ami_cells(pool, runs, "all", f"{stem}_language"),
                _f(_ami(pool, runs, "all", f"{stem}_script")["value"]),
            ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def within_script_table(pool: dict[str, dict], xr: Sequence[str], br: Sequence[str]) -> list[str]:
    """AMI against language within each script group of >= 3 languages, the pool beside the references."""
    from data_pipelines import languages as language_table

    groups = sorted({key.split("|")[0] for key in pool[xr[0]] if key.startswith("script:")})
    lines = [
        "",
        "## Language within a script (each script holding >= 3 languages, its sentences alone)",
        "",
        "Where the script cannot tell languages apart. The pool's top prompt, the random keys and step 0 are "
        "restricted to the group; TF-IDF and query k-means are refitted on it (k = its languages).",
        "",
        "| script (languages) | clusterer | XLM-P arm: AMI vs language [CI] | p99 | baseline arm: AMI vs language "
        "[CI] | p99 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    labels = dict(CLUSTERERS, kmeans_query_klang="k-means of the model's query", tfidf_klang="TF-IDF k-means")
    for where in groups:
        script = where.split(":", 1)[1]
        names = ", ".join(lang for lang in languages() if language_table.script(lang, "") == script)
        for stem in ("prompt", "step0_prompt", "random_keys", "kmeans_query_klang", "tfidf_klang"):
            cells = [_ami_cells(pool, runs, where, f"{stem}_language") for runs in (xr, br)]
            lines.append(f"| {script} ({names}) | {labels[stem]} | " + " | ".join(cells) + " |")
    return lines


def report(
    scalars: dict[str, dict], run_list: list[dict], low: list[str], meta: dict, pool: dict[str, dict] | None = None
) -> tuple[str, dict]:
    """SCIENCE.md's text and its numbers."""
    seeds = sorted({r["seed"] for r in run_list if r["arm"] == "xlmp"})
    xr = [f"xlmp_s{s}" for s in seeds]
    br = [f"baseline_s{s}" for s in seeds]
    keys = [k for k in scalars[xr[0]] if not k.startswith("mlm_loss/")]
    main = {k: paired([scalars[r][k] for r in xr], [scalars[r][k] for r in br]) for k in keys}
    per_lang = {
        lang: paired([scalars[r][f"mlm_loss/{lang}"] for r in xr], [scalars[r][f"mlm_loss/{lang}"] for r in br])
        for lang in languages()
    }
    checks = targets(main, scalars, xr)
    lines = [
        "# SCIENCE: does the prompt pool cluster languages, and does it help?",
        "",
        f"Produced by `{meta['command']}` on {meta['date']} ({meta['machine']}); every figure below comes from",
        "that run (raw numbers: `bench/results/science.json`). Nothing here was tuned on an evaluation set: the",
        "pool options were fixed before the run, and the evaluation text occurs in no training split.",
        "",
        "## Setup",
        "",
        f"- Both arms: `configs/tiny.py` (2 layers, 64 wide) on {len(languages())} languages (its "
        f"{len(TINY_LANGUAGES)} and {', '.join(EXTRA_LANGUAGES)}), `{' '.join(EXPERIMENT)}`; the baseline is `configs/tiny_baseline.py` (no pool). Equal data, steps "
        "and tokens; seed s of one arm is paired with seed s of the other.",
        f"- XLM-P's pool options (our choice, fixed a priori): `{POOL_OPTIONS}`.",
        f"- Seeds: {seeds}. Intervals are 95 % t intervals of the paired difference over seeds (n = {len(seeds)}).",
        "- Evaluation: MLM loss on the validation lines of each language; retrieval top-1 on held-out pairs "
        "(chance = 1 / pairs); zero-shot classification (English -> each language) on held-out test lines; "
        "clustering on validation lines: AMI with 200 label shuffles and a bootstrap interval, Mantel tests "
        "with 999 permutations.",
        f"- Low-resource half (fewest training lines): {', '.join(low)}.",
        "",
        "## Targets",
        "",
        "| target | measured (XLM-P, mean over seeds) | met |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {name} | {figure} | {'yes' if ok else 'no'} |" for name, figure, ok in checks]
    lines += [
        "",
        "## XLM-P vs baseline (paired over seeds)",
        "",
        "| metric | XLM-P | baseline | XLM-P - baseline [95 % CI] |",
        "| --- | --- | --- | --- |",
    ]
    for k in (
        "mlm_loss_mean",
        "retrieval_mean",
        "retrieval_en_to_xx",
        "retrieval_xx_to_en",
        "retrieval_low_resource",
        "classification_zero_shot",
    ):
        p = main[k]
        lines.append(
            f"| {k} | {_f(p['xlmp'])} +- {_f(p['xlmp_std'])} | {_f(p['baseline'])} +- {_f(p['baseline_std'])} "
            f"| {_f(p['diff'])} [{_f(p['diff_low'])}, {_f(p['diff_high'])}] |"
        )
    lines += [
        "",
        "## The pool's clustering (XLM-P; held-out validation lines)",
        "",
        "| metric | " + " | ".join(xr) + " |",
        "| --- |" + " --- |" * len(xr),
    ]
    for k in POOL_METRICS:
        lines.append(f"| {k} | " + " | ".join(_f(scalars[r][k]) for r in xr) + " |")
    lines += [
        "",
        "`mantel_p_<family|branch>_within_script`: the same correlation, its null permuting languages only within "
        "their script (family is nested in script, so what script alone explains stays in the null).",
    ]
    if pool:
        lines += reference_table(pool, xr, br) + within_script_table(pool, xr, br)
    lines += [
        "",
        f"Plots of seed {seeds[0]}: `{meta['plots']}` (routing similarity heatmap, dendrogram of languages from",
        "routing alone, language x prompt weights).",
        "",
        "## Per-language MLM loss (mean over seeds)",
        "",
        "| language | XLM-P | baseline | difference [95 % CI] |",
        "| --- | --- | --- | --- |",
    ]
    for lang, p in per_lang.items():
        lines.append(
            f"| {lang} | {_f(p['xlmp'])} | {_f(p['baseline'])} | {_f(p['diff'])} [{_f(p['diff_low'])}, "
            f"{_f(p['diff_high'])}] |"
        )
    ablation = [r for r in run_list if r["arm"] not in ("xlmp", "baseline")]
    if ablation:
        cols = ("mlm_loss_mean", "retrieval_mean", "ami_prompt_language", "ami_prompt_script", "pool_fraction_top",
                "effective_prompts")  # fmt: skip
        lines += [
            "",
            f"## Ablation (seed {seeds[0]}): each row turns pool options back to the old behaviour",
            "",
            "| variant | options | " + " | ".join(cols) + " |",
            "| --- | --- |" + " --- |" * len(cols),
        ]
        for r in [dict(name=xr[0], arm="xlmp (all options)", pool=POOL_OPTIONS)] + ablation:
            lines.append(
                f"| {r['arm']} | `{r['pool']}` | " + " | ".join(_f(scalars[r["name"]][c]) for c in cols) + " |"
            )
        lines.append(f"| baseline (no pool) | | {_f(scalars[br[0]][cols[0]])} | {_f(scalars[br[0]][cols[1]])} |"
                     + " |" * (len(cols) - 2))  # fmt: skip
    numbers = dict(meta=meta, runs=run_list, per_run=scalars, paired=main, per_language_mlm=per_lang,
                   targets=[dict(target=n, measured=m, met=ok) for n, m, ok in checks], pool=pool or {})  # fmt: skip
    return "\n".join(lines) + "\n", numbers


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="workdirs/science", help="runs and eval sweep go here")
    parser.add_argument("--seeds", default="0,1,2", help="paired seeds, comma-separated")
    parser.add_argument("--ablation", default=",".join(ABLATIONS), help="ablation variants (seed 0), comma-separated")
    parser.add_argument("--steps", type=int, default=0, help="override the training steps (0 = EXPERIMENT's)")
    parser.add_argument("--doc", default=os.path.join(REPO, "SCIENCE.md"), help="the report to write")
    parser.add_argument("--json", default=os.path.join(REPO, "bench", "results", "science.json"))
    parser.add_argument("--plots", default=os.path.join(REPO, "bench", "results", "science_plots"))
    args = parser.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(f"bench.science: --seeds={args.seeds!r} is not a comma-separated list of integers") from None
    if not seeds:
        raise SystemExit("bench.science: --seeds is empty")
    steps = (
        [f"--config.train.steps={args.steps}", f"--config.train.checkpoint_every={args.steps}"] if args.steps else []
    )
    root = os.path.abspath(args.out)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(root, "jax_cache"))
    run_list = runs(seeds, [a for a in args.ablation.split(",") if a.strip()])
    began = time.perf_counter()
    workdirs = {r["name"]: train(r, root, steps, env) for r in run_list}
    rows = sweep(list(workdirs.values()), os.path.join(root, "eval"), env)
    langs = retrieval_languages(rows)
    low = low_resource_half(langs)
    scalars = {name: per_run_scalars(rows, wd, langs, low) for name, wd in workdirs.items()}
    pool = {name: pool_values(rows, wd) for name, wd in workdirs.items()}
    plots = _copy_plots(os.path.join(root, "eval"), workdirs[f"xlmp_s{seeds[0]}"], args.plots)
    meta = dict(
        command="python -m bench.science " + " ".join(argv if argv is not None else sys.argv[1:]),
        date=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        machine=f"{machine_info().get('cpu', 'cpu')}, {os.cpu_count()} cores",
        minutes=round((time.perf_counter() - began) / 60, 1),
        plots=os.path.relpath(plots, REPO),
    )
    text, numbers = report(scalars, run_list, low, meta, pool)
    text += f"\nThe whole experiment took {meta['minutes']} min (training, evals and this report).\n"
    text += _kept_notes(args.doc)
    with open(args.doc, "w") as f:
        f.write(text)
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(numbers, f, indent=1, default=float)
    print(text)


NOTES_MARKER = "<!-- Notes below this line are written by hand and kept when the experiment is rerun. -->"


def _kept_notes(doc: str) -> str:
    """The hand-written reading of the figures at the end of an existing report (from the marker on)."""
    try:
        with open(doc) as f:
            text = f.read()
    except FileNotFoundError:
        return "\n" + NOTES_MARKER + "\n"
    at = text.find(NOTES_MARKER)
    return "\n" + (text[at:] if at >= 0 else NOTES_MARKER + "\n")


def _copy_plots(eval_dir: str, workdir: str, target: str) -> str:
    """Copies the sweep's routing plots of one run (the sweep names its plot folders after the run)."""
    os.makedirs(target, exist_ok=True)
    name = os.path.basename(workdir.rstrip("/"))
    plots = os.path.join(eval_dir, "plots")
    for root, _, files in os.walk(plots):
        if not os.path.relpath(root, plots).startswith(f"{name}-"):
            continue
        for f in files:
            if f.endswith(".png"):
                shutil.copy(os.path.join(root, f), os.path.join(target, f))
    return target


if __name__ == "__main__":
    main()
