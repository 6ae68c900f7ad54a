"""The XLM-P experiment: the pool against the no-pool baseline at equal steps and tokens, paired seeds -> SCIENCE.md.

    python -m bench.science                      # the committed experiment (~75 min on 2 idle CPU cores, below)
    python -m bench.science --steps=40 --seeds=0,1 --ablation= --out=/tmp/sci --doc=/tmp/SCIENCE.md \
        --json=/tmp/sci.json --plots=/tmp/sci_plots                                       # a smoke run (~15 min)
    python -m bench.science --preset=curve       # the baseline's learning curve (~65 min idle)
    python -m bench.science --preset=mini        # both arms at mini, 3 seeds x 3200 steps (~4.5 h; run with --seeds=0)
    bash bench/run_device_science.sh OUTDIR      # --preset=device on one H100 (<= 4 min; its shards carried)

Both arms train the same config (``configs/tiny.py`` / ``configs/tiny_baseline.py`` plus ``EXPERIMENT``) on
the same data for the same steps and tokens; seed s of XLM-P is paired with seed s of the baseline (same
initial encoder draw and batch order). Every run is then evaluated by the eval sweep on text no training split
holds (the sample's leakage-free splits): per-language MLM loss on validation lines, retrieval on held-out
pairs, the transfer task on its test strings, and the pool's clustering with its references and shuffle
controls. The ablation answers the pool's open questions (``ABLATION_QUESTIONS``) on the first three seeds,
each variant paired with XLM-P's run of its seed, on dev text only (the transfer task's dev strings, which no
reported table reads). Runs and sweep cells already finished are reused, so an interrupted experiment
continues where it stopped.

MLM verdict: non-inferiority decided on the paired 95 % t interval of XLM-P - baseline (validation loss, mean
over languages) against +1 % of the baseline's mean loss (``non_inferiority``); per-language intervals are a
description only. The pool prepends its prompt vectors, so XLM-P's step costs more FLOPs than the baseline's
(``compute_line``: 5.43 vs 5.30 GFLOP at tiny, 1.024 x); equal compute here is equal steps, rows and tokens.

Budget of the committed experiment (``PRESETS["experiment"]``: 10 seeds, 26 runs = 10 x 2 arms + 2 ablation
variants x 3 seeds; the estimate below was made for the earlier 4 single-seed variants, 2 runs fewer). Measured on these 2 cores while they were shared with other work (load average 5.5-10):
120-step runs of each arm with ``EXPERIMENT`` (27 languages) took 0.44 s a step for XLM-P and 0.36 s for the
baseline, plus ~8 s of start-up a run once the compilation cache holds its programs (~35 s for the first run
of an arm); the eval sweep took ~2.8 min a run (roughly: MLM ~20 s, retrieval ~15 s, the pool eval with its
references ~70 s, the transfer task's 3 fine-tuning seeds ~60 s; ~1.8 min without the transfer task, which the
ablation's runs skip). The README's idle main job (300 steps of XLM-P and its evals in ~72 s after start-up)
puts the idle machine ~2.2 x faster: ~0.20 and ~0.16 s a step, ~1.3 and ~0.8 min of sweep a run. Idle, S steps
a run cost

    training  S x (14 x 0.20 + 10 x 0.16) s = 4.4 S s          14 XLM-P runs, 10 baseline runs
    fixed     24 x 8 s + 2 x 35 s                  ~  4 min     start-up and the two compilations
    sweep     20 x 1.3 min + 4 x 0.8 min           ~ 29 min

so S = 500 gives 37 + 4 + 29 ~ 70 min, and ~85 min if the machine is only 1.8 x faster idle. The steps are
therefore shorter than the earlier 800 (3 seeds): 500 steps x 32 rows x 128 tokens = 2.05 M tokens a run
(~2.6 passes over the sample's 0.78 M training tokens). On a machine as loaded as at the measurement the same
experiment takes ~2.5-3 h.

``--preset=device`` (``PRESETS["device"]``): both arms at size ``small`` (4 layers, 256 wide, 4 heads, FFN 1024,
bf16, batch 64, dropout 0.1), seeds 0 and 1, 1000 steps (64 k rows, ~5 passes), evals mlm, retrieval and pool
(the transfer task waits for its rebuild). FLOPs a step (``xlmp_jax.training.flops``): XLM-P 190.2 G, baseline 184.6 G;
at 40 % of an H100's 989 TFLOP/s bf16 peak (396 TFLOP/s) that is 0.48 ms a step, 1.9 s for all 4 runs. So
FLOPs do not bound it; the fixed costs do: ~10 ms a step of dispatch and host input (10 s a run), start-up
~25 s for the first run of each arm (compilation) and ~8 s after, the sweep ~25 s a run (its pool references
and shuffles are NumPy/scikit-learn on the host's 16 cores). 2 x (25 + 10) + 2 x (8 + 10) + 10 + 4 x 25 ~
216 s, under 4 min; the script stops it at 235 s (finished runs and sweep cells are kept for a rerun). The
device has no Beam or TensorFlow: the shards are prepared here into ``DEVICE_PREPARED`` and carried.

``--preset=curve`` (``PRESETS["curve"]``): the baseline alone at tiny and at ``mini`` (4 layers, 128 wide, FFN
512, learning rate 1e-3 chosen on training loss; 26.7 vs 5.3 GFLOP a step), seed 0, 3200 steps each with a
checkpoint every 800 steps (3.28 M tokens; 13.1 M in all, ~17 passes over the sample), each checkpoint swept
(MLM, retrieval on dev pairs, the transfer task) into a table of tokens against each metric. Idle estimate:
tiny 3200 x 0.16 s ~ 9 min, mini at worst in proportion to its FLOPs 3200 x 0.8 s ~ 43 min, 8 sweep cells
~ 1.5 min each ~ 12 min: ~65 min.

One file over 300 lines on purpose: it is one experiment read top to bottom (the arms, the runs, the sweep,
the statistics, the SCIENCE.md it writes), and each part only makes sense next to the others.
"""

from __future__ import annotations

import argparse
import dataclasses
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

from bench.harness import REPO, machine_info
from configs.tiny import TINY_LANGUAGES
from xlmp_jax.model.prompt_pool import OLD_POOL_OPTIONS, PoolConfig

# Languages the experiment adds to the main job's 20 (`configs/tiny.py` keeps its own) so that scripts other
# than Latin hold >= 3 languages each, where the pool can only tell languages apart by something other than
# the script: Cyrillic ru + uk, bg, kk; Arabic script ar + fa, ug; Devanagari hi + mr, ne (each ~300 lines in
# the sample, no parallel pairs: MLM training and clustering only). Our choice.
EXTRA_LANGUAGES = ("uk", "bg", "kk", "fa", "ug", "mr", "ne")
# Shared by both arms: the tiny model on those languages, TLM on the *training* pairs (the
# retrieval pairs are held out) (`shuffle_buffer` > 0: a full reshuffle each epoch;
# the value is kept from the tf.data days, when it sized a buffer); no pool report at the end of training (the
# sweep's pool eval is the same analysis, and with its references it costs minutes per run). Our choice.
EXPERIMENT = [
    "--config.train.eval_every=0",
    "--config.train.log_every=100",
    "--config.train.pool_report=False",
    "--config.data.tlm_rate=0.25",
    "--config.data.shuffle_buffer=1000",
    "--config.data.languages=(" + ",".join(f"'{lang}'" for lang in TINY_LANGUAGES + EXTRA_LANGUAGES) + ")",
]
# XLM-P's pool options: PoolConfig's defaults, which every XLM-P config trains with (chosen a priori, not tuned
# on any eval), passed explicitly so that the report names them; in the order of OLD_POOL_OPTIONS.
POOL_OPTIONS = {name: getattr(PoolConfig(), name) for name in OLD_POOL_OPTIONS}
# Ablation: the pool option(s) each variant turns back to the old behaviour.
ABLATIONS = {
    "no_key_loss": {"key_loss_weight": 0.0},
    "no_diversity_loss": {"diversity_loss_weight": 0.0},
    "small_prompt_init": {"prompt_init_std": 0.02},
    "old_pool": dict(OLD_POOL_OPTIONS),
}
# The ablation's open questions, which the experiment runs by default: is the diversity term worth keeping, and
# the larger prompt init (both our choices). Each variant runs on the first ABLATION_SEEDS paired seeds, paired
# with XLM-P's own run of that seed, and is judged on dev text only: the transfer task's dev strings
# (``heldout.transfer_dev_texts``), which share no sentence with anything this report reads.
ABLATION_QUESTIONS = ("no_diversity_loss", "small_prompt_init")
ABLATION_SEEDS = 3
ABLATION_EVALS = "mlm,pool"
# The dev sweep's settings: MLM and the pool on dev strings; no step-0 reference and fewer shuffles, as only
# the point values of each seed enter the paired comparison.
ABLATION_DEV_SETTINGS = (
    "--config.mlm.source=transfer_dev", "--config.pool.text=transfer_dev", "--config.pool.step0=False",
    "--config.pool.shuffles=50", "--config.pool.bootstrap_resamples=50", "--config.pool.mantel_permutations=99",
)  # fmt: skip
EVALS = "mlm,retrieval,pool,package"
# Without the transfer task (~1 min a run of fine-tuning): the ablation table does not show it, and the device preset
# waits for its rebuild.
EVALS_NO_TRANSFER = "mlm,retrieval,pool"
# The MLM non-inferiority margin: XLM-P may lose at most this fraction of the baseline's mean validation loss.
MARGIN = 0.01
# A larger size than tiny, by model overrides (same data, vocabulary and sequences, so the same prepared
# shards): 4 layers, 128 wide for the CPU learning curve; 4 layers, 256 wide for the device. Dropout back on,
# as these see the sample's 0.78 M training tokens many times over. Our choice. MINI's learning rate was chosen
# on training loss alone (`bench/results/learning_rate_mini.json`: `python -m bench.learning_rate --size=mini
# --rates=5e-4,1e-3,2e-3`, 300 steps each; tail loss 7.21 / 7.00 / 7.23): at tiny's 3e-3 it stayed on the
# unigram plateau (~7.22) through 1500 steps.
MINI = (
    "--config.model.hidden_size=128", "--config.model.num_layers=4", "--config.model.num_heads=4",
    "--config.model.intermediate_size=512", "--config.model.hidden_dropout=0.1",
    "--config.model.attention_dropout=0.1", "--config.train.learning_rate=1e-3",
)  # fmt: skip
SMALL = (
    "--config.model.hidden_size=256", "--config.model.num_layers=4", "--config.model.num_heads=4",
    "--config.model.intermediate_size=1024", "--config.model.hidden_dropout=0.1",
    "--config.model.attention_dropout=0.1", "--config.train.batch_size=64", "--config.model.dtype=bfloat16",
)  # fmt: skip
# Dev pairs a language for the curve's retrieval (the transfer task's dev strings and their translations): the
# languages that have this many, each cut to it, so chance is 1 % everywhere. Our choice.
DEV_PAIRS = 100
# Where the device preset reads its shards: prepared here (Beam and TensorFlow are not on the device) and carried.
DEVICE_PREPARED = "workdirs/science_prepared"


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named experiment: which runs (arms x sizes x seeds, ablation), how long, which evals, where it reports."""

    seeds: tuple[int, ...]
    steps: int
    ablation: tuple[str, ...] = ABLATION_QUESTIONS
    arms: tuple[str, ...] = ("xlmp", "baseline")
    sizes: tuple[tuple[str, tuple[str, ...]], ...] = (("tiny", ()),)
    checkpoints: int = 1  # evenly spaced checkpoints kept and evaluated (1: the final one)
    evals: str = EVALS
    gpu: bool = False
    prepared: str = ""  # data.prepared_dir ('' = the run's own cache, prepared on first use)
    retrieval_pairs: str = "heldout"  # heldout (reported pairs) | transfer_dev (dev pairs, ``dev_pair_settings``)
    out: str = "workdirs/science"
    doc: str = "SCIENCE.md"
    json: str = "bench/results/science.json"
    plots: str = "bench/results/science_plots"


PRESETS = {
    "experiment": Preset(seeds=tuple(range(10)), steps=500),
    "device": Preset(
        seeds=(0, 1), steps=1000, ablation=(), sizes=(("small", SMALL),), evals=EVALS_NO_TRANSFER, gpu=True,
        prepared=DEVICE_PREPARED,
        out="workdirs/science_device", doc="workdirs/science_device/SCIENCE_DEVICE.md",
        json="workdirs/science_device/science_device.json", plots="workdirs/science_device/plots",
    ),
    # The paired comparison where the curve's dev columns point (mini after 3200 steps); run with --seeds=0 only.
    "mini": Preset(
        seeds=(0, 1, 2), steps=3200, ablation=(), sizes=(("mini", MINI),), out="workdirs/science_mini",
        doc="bench/results/science_mini.md", json="bench/results/science_mini.json",
        plots="bench/results/science_mini_plots",
    ),
    "curve": Preset(
        seeds=(0,), steps=3200, ablation=(), arms=("baseline",), sizes=(("tiny", ()), ("mini", MINI)),
        checkpoints=4, evals="mlm,retrieval,package", retrieval_pairs="transfer_dev", out="workdirs/science_curve",
        doc="bench/results/science_curve.md", json="bench/results/science_curve.json",
        plots="workdirs/science_curve/plots",
    ),
}  # fmt: skip
CONFIGS = {"xlmp": "configs/tiny.py", "baseline": "configs/tiny_baseline.py"}
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


def step_args(steps: int, checkpoints: int = 1) -> list[str]:
    """Training length and checkpoints: ``checkpoints`` evenly spaced ones, every one kept for the sweep."""
    if steps < 1 or checkpoints < 1 or steps % checkpoints:
        raise SystemExit(f"bench.science: {steps} steps do not split into {checkpoints} equal checkpoint intervals")
    every = steps // checkpoints
    return [
        f"--config.train.steps={steps}",
        f"--config.train.checkpoint_every={every}",
        f"--config.train.keep_checkpoints={checkpoints}",
    ]


def run_args(run: dict, preset: Preset, steps: int) -> list[str]:
    """Every override of one run, in the order the trainer applies them (later wins)."""
    args = EXPERIMENT + list(run["size_args"]) + step_args(steps, preset.checkpoints)
    if preset.prepared:
        args.append(f"--config.data.prepared_dir={os.path.abspath(os.path.join(REPO, preset.prepared))}")
    args.append(f"--config.train.seed={run['seed']}")
    return args + [f"--config.model.pool.{k}={v}" for k, v in run["pool"].items()]


def runs(seeds: Sequence[int], ablation: Sequence[str], preset: Preset | None = None) -> list[dict]:
    """Every training run: name, arm, size, config file, pool options, seed."""
    preset = preset or PRESETS["experiment"]
    out = []
    for size, size_args in preset.sizes:
        tag = f"_{size}" if len(preset.sizes) > 1 else ""
        for seed in seeds:
            for arm in preset.arms:
                pool = POOL_OPTIONS if arm == "xlmp" else {}
                out.append(dict(name=f"{arm}{tag}_s{seed}", arm=arm, size=size, size_args=size_args,
                                config=CONFIGS[arm], pool=pool, seed=seed))  # fmt: skip
    for name in ablation:
        if name not in ABLATIONS:
            raise SystemExit(f"bench.science: unknown ablation {name!r}; known: {', '.join(ABLATIONS)}")
        size, size_args = preset.sizes[0]
        options = {**POOL_OPTIONS, **ABLATIONS[name]}
        for seed in seeds[:ABLATION_SEEDS]:
            out.append(dict(name=f"xlmp_{name}_s{seed}", arm=name, size=size, size_args=size_args,
                            config=CONFIGS["xlmp"], pool=options, seed=seed))  # fmt: skip
    return out


def train(run: dict, root: str, args: list[str], env: dict) -> str:
    """Trains one run with ``args`` (skipped when its final checkpoint exists); returns its work directory."""
    from xlmp_jax.training import checkpoint_read

    workdir = os.path.join(root, run["name"])
    steps = int([a for a in args if a.startswith("--config.train.steps=")][-1].split("=")[1])
    if checkpoint_read.latest_step(workdir) == steps:
        print(f"bench.science: {run['name']}: done already", flush=True)
        return workdir
    cmd = [sys.executable, "-m", "xlmp_jax.train", f"--config={run['config']}", f"--workdir={workdir}", *args]
    began = time.perf_counter()
    print(f"bench.science: training {run['name']} ...", flush=True)
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"bench.science: {run['name']} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    print(f"bench.science: {run['name']} trained in {time.perf_counter() - began:.0f}s", flush=True)
    return workdir


def sweep(
    workdirs: Sequence[str], out: str, env: dict, evals: str = EVALS, steps: str = "latest",
    langs: Sequence[str] = (), settings: Sequence[str] = (),
) -> list[dict]:  # fmt: skip
    """The eval sweep over every run's checkpoints (``steps``: latest, all or a list) on ``langs`` (default: the
    experiment's), with extra sweep ``settings``; returns its result rows."""
    langs = ",".join(langs or languages())
    cmd = [
        sys.executable, "-m", "xlmp_jax.evaluate", "--config=configs/eval_sweep.py",
        f"--config.workdirs={','.join(workdirs)}", f"--config.out={out}", f"--config.steps={steps}",
        f"--config.evals={evals}", "--config.progress=False", f"--config.mlm.languages={langs}",
        f"--config.pool.languages={langs}", f"--config.pool.reference_pool_size={reference_pool_size()}",
        *settings,
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


def non_inferiority(mlm: dict[str, float], margin: float = MARGIN) -> tuple[str, float]:
    """The MLM verdict from the paired 95 % interval of XLM-P - baseline against ``margin`` x the baseline's mean
    loss (in loss units, also returned): non-inferior when the whole interval lies below it, inferior when the
    whole interval lies above it, undecided when it straddles it (more seeds would be needed)."""
    bound = margin * mlm["baseline"]
    if mlm["diff_high"] < bound:
        return "non-inferior", bound
    if mlm["diff_low"] > bound:
        return "inferior", bound
    return "undecided", bound


def step_flops(config: str, args: Sequence[str]) -> float:
    """Model FLOPs of one training step of a run (``xlmp_jax.training.flops``: matmuls, forward and backward, one device)."""
    from xlmp_jax import config_utils
    from xlmp_jax.training import flops

    return flops.step_flops_per_device(config_utils.load_run(config, list(args)), 1)


def compute_line(run_list: list[dict], preset: Preset, steps: int) -> str:
    """Tokens seen and FLOPs per step of each arm: equal steps and tokens, not equal FLOPs (the pool adds positions)."""
    from xlmp_jax import config_utils

    first = {r["arm"]: r for r in run_list}
    arms = [a for a in ("xlmp", "baseline") if a in first]
    run = config_utils.load_run(first[arms[0]]["config"], run_args(first[arms[0]], preset, steps))
    rows, seq = run.train.batch_size, run.data.seq_length
    flops = {a: step_flops(first[a]["config"], run_args(first[a], preset, steps)) for a in arms}
    text = (
        f"- Compute per run: {steps} steps x {rows} rows x {seq} tokens = {steps * rows * seq / 1e6:.2f} M tokens "
        "seen by each arm. Model FLOPs per training step (`xlmp_jax.training.flops.step_flops_per_device`: matmuls, "
        "forward and backward): " + ", ".join(f"{a} {flops[a] / 1e9:.2f} G" for a in arms) + "."
    )
    if len(arms) == 2:
        prompts = run.model.pool.length if run.model.pool is not None else 0
        text += (
            f" XLM-P's step costs {flops['xlmp'] / flops['baseline']:.3f} x the baseline's (its {prompts} prompt "
            f"vectors are prepended to every row's {seq} positions, plus the pool's query-key scores): equal compute "
            "here means equal steps, rows and tokens, not equal FLOPs."
        )
    return text


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
        "transfer_en": value(rows, workdir, "package", "en", "accuracy"),
        "transfer_zero_shot": value(rows, workdir, "package", "all", "accuracy"),
        "transfer_ngram_en": value(rows, workdir, "package", "en", "ngram_accuracy"),
        "transfer_ngram_zero_shot": value(rows, workdir, "package", "all", "ngram_accuracy"),
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
    verdict, bound = non_inferiority(mlm)
    out.append(
        (
            f"MLM non-inferiority: the 95 % interval of XLM-P - baseline (mean validation loss over languages, "
            f"paired over {mlm['n']} seeds) entirely below +{100 * MARGIN:.0f} % of the baseline's mean",
            f"{_f(mlm['diff'])} [{_f(mlm['diff_low'])}, {_f(mlm['diff_high'])}] against a margin of +{_f(bound)} "
            f"({100 * MARGIN:.0f} % of {_f(mlm['baseline'])}): {verdict}",
            verdict == "non-inferior",
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
    scalars: dict[str, dict], run_list: list[dict], low: list[str], meta: dict, pool: dict[str, dict] | None = None,
    ablation: dict | None = None,
) -> tuple[str, dict]:  # fmt: skip
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
        f"that run (raw numbers: `{meta.get('json', 'bench/results/science.json')}`). Nothing here was tuned on an "
        "evaluation set: the",
        "pool options were fixed before the run, and the evaluation text occurs in no training split.",
        "",
        "## Setup",
        "",
        f"- Both arms: `configs/tiny.py` ({meta.get('size', 'tiny: 2 layers, 64 wide')}) on {len(languages())} "
        f"languages (its {len(TINY_LANGUAGES)} and {', '.join(EXTRA_LANGUAGES)}), "
        f"`{meta.get('overrides', ' '.join(EXPERIMENT))}`; the baseline is `configs/tiny_baseline.py` (no pool). "
        "Equal data, steps and tokens; seed s of one arm is paired with seed s of the other.",
        f"- XLM-P's pool options (our choice, fixed a priori): `{POOL_OPTIONS}`.",
        f"- Seeds: {seeds}. Intervals are 95 % t intervals of the paired difference over seeds (n = {len(seeds)}).",
        *([meta["compute"]] if meta.get("compute") else []),
        "- Evaluation: MLM loss on the validation lines of each language; retrieval top-1 on held-out pairs "
        "(chance = 1 / pairs); the package-group transfer task (fine-tuned on English, learning rate and step "
        "chosen on English dev; English test and the mean of the other languages; a character n-gram "
        "classifier fitted on English as the surface-cue reference; chance 0.20); "
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
        "transfer_en",
        "transfer_zero_shot",
    ):
        p = main[k]
        lines.append(
            f"| {k} | {_f(p['xlmp'])} +- {_f(p['xlmp_std'])} | {_f(p['baseline'])} +- {_f(p['baseline_std'])} "
            f"| {_f(p['diff'])} [{_f(p['diff_low'])}, {_f(p['diff_high'])}] |"
        )
    ngram = next((v for v in scalars.values() if np.isfinite(v.get("transfer_ngram_en", np.nan))), None)
    if ngram:
        lines += [
            "",
            f"Transfer task references (no pre-trained model): a character n-gram classifier fitted on English "
            f"scores {_f(ngram['transfer_ngram_en'])} on English test and {_f(ngram['transfer_ngram_zero_shot'])} "
            "on the other languages (mean); chance is 0.200.",
        ]
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
        "## Per-language MLM loss (mean over seeds): a description, not a test",
        "",
        "Paired 95 % t intervals per language, shown to describe where the difference lies. None is tested "
        f"against the {100 * MARGIN:.0f} % margin: one interval per language with no correction for their number, "
        f"on n = {len(seeds)} seeds. The verdict is the targets table's, on the mean over languages.",
        "",
        "| language | XLM-P | baseline | difference [95 % CI] | difference / baseline |",
        "| --- | --- | --- | --- | --- |",
    ]
    for lang, p in per_lang.items():
        lines.append(
            f"| {lang} | {_f(p['xlmp'])} | {_f(p['baseline'])} | {_f(p['diff'])} [{_f(p['diff_low'])}, "
            f"{_f(p['diff_high'])}] | {_f(100 * p['diff'] / p['baseline'], 2)} % |"
        )
    if ablation:
        lines += ablation_table(ablation)
    numbers = dict(meta=meta, runs=run_list, per_run=scalars, paired=main, per_language_mlm=per_lang,
                   targets=[dict(target=n, measured=m, met=ok) for n, m, ok in checks], pool=pool or {},
                   ablation=ablation or {})  # fmt: skip
    return "\n".join(lines) + "\n", numbers


# ----------------------------------------------------------------------------------------- the ablation on dev text

# What the ablation compares on dev text: (name, row of the sweep, what it says).
DEV_METRICS = (
    ("mlm_loss", "MLM loss (mean over languages)"),
    ("ami_prompt_language", "AMI(top prompt, language)"),
    ("effective_prompts", "effective prompts"),
)


def dev_scalars(rows: list[dict], workdir: str, langs: Sequence[str]) -> dict[str, float]:
    """One run's dev figures: MLM loss averaged over languages, the pool's AMI and effective prompts."""
    mlm = [value(rows, workdir, "mlm", lang, "loss") for lang in langs]
    return dict(
        mlm_loss=float(np.nanmean(mlm)) if np.isfinite(mlm).any() else float("nan"),
        ami_prompt_language=value(rows, workdir, "pool", "all", "ami_prompt_language"),
        effective_prompts=value(rows, workdir, "pool", "all", "effective_prompts"),
    )


def ablation_verdict(mlm: dict[str, float], ami: dict[str, float]) -> str:
    """The decision for one variant from its paired intervals against XLM-P's default (variant - default): the
    default changes only when the dev MLM interval lies wholly below 0 and routing does not get worse."""
    if mlm["diff_high"] < 0 and ami["diff_low"] >= 0:
        return "better on dev MLM, routing no worse: switch to the variant's setting"
    if mlm["diff_high"] < 0:
        return "better on dev MLM, but AMI may drop: keep the default, a trade-off to revisit at scale"
    if mlm["diff_low"] > 0:
        return "worse on dev MLM: keep the default"
    return "dev MLM interval spans 0: no evidence either way; keep the default"


def ablation_summary(dev_rows: list[dict], run_list: list[dict], workdirs: dict[str, str]) -> dict:
    """Each variant against XLM-P's runs of the same seeds on dev text: per-run figures, paired differences and
    the verdict. Empty without ablation runs."""
    variants = [r for r in run_list if r["arm"] not in CONFIGS]
    if not variants:
        return {}
    langs = sorted({r["language"] for r in dev_rows if r["eval"] == "mlm" and r["language"] != "all"})
    per_run = {r["name"]: dev_scalars(dev_rows, workdirs[r["name"]], langs) for r in variants}
    seeds = sorted({r["seed"] for r in variants})
    per_run.update({f"xlmp_s{s}": dev_scalars(dev_rows, workdirs[f"xlmp_s{s}"], langs) for s in seeds})
    out = dict(languages=langs, seeds=seeds, per_run=per_run, variants={})
    for arm in dict.fromkeys(r["arm"] for r in variants):
        diffs = {
            metric: paired([per_run[f"xlmp_{arm}_s{s}"][metric] for s in seeds],
                           [per_run[f"xlmp_s{s}"][metric] for s in seeds])
            for metric, _ in DEV_METRICS
        }  # fmt: skip
        out["variants"][arm] = dict(
            options=ABLATIONS[arm],
            paired=diffs,
            verdict=ablation_verdict(diffs["mlm_loss"], diffs["ami_prompt_language"]),
        )
    return out


def ablation_table(ablation: dict) -> list[str]:
    """SCIENCE.md's ablation section: the dev text, each variant's paired differences and its verdict."""
    lines = [
        "",
        f"## Ablation on dev text (seeds {ablation['seeds']}): the open pool options",
        "",
        f"Each variant turns one option back to the old behaviour and is paired with XLM-P's run of the same seed. "
        f"Judged on dev text only: the transfer task's dev strings in {len(ablation['languages'])} languages "
        f"({', '.join(ablation['languages'])}; at most 128 a language for MLM, 200 for the pool), none of them a "
        "sentence any table above reads. Columns: the variant's mean, then variant - XLM-P [95 % t interval over "
        f"seeds, n = {len(ablation['seeds'])}]. The default changes only when the dev MLM interval lies wholly "
        "below 0 and the AMI interval does not lie below 0.",
        "",
        "| variant | options | " + " | ".join(label for _, label in DEV_METRICS) + " | verdict |",
        "| --- | --- |" + " --- |" * len(DEV_METRICS) + " --- |",
    ]
    default = [ablation["per_run"][f"xlmp_s{s}"] for s in ablation["seeds"]]
    lines.append(
        "| XLM-P (defaults) | | "
        + " | ".join(_f(float(np.mean([r[m] for r in default]))) for m, _ in DEV_METRICS)
        + " | |"
    )
    for arm, v in ablation["variants"].items():
        cells = [
            f"{_f(p['xlmp'])}; {_f(p['diff'])} [{_f(p['diff_low'])}, {_f(p['diff_high'])}]"
            for p in (v["paired"][m] for m, _ in DEV_METRICS)
        ]
        lines.append(f"| {arm} | `{v['options']}` | " + " | ".join(cells) + f" | {v['verdict']} |")
    return lines


def parse(argv: Sequence[str] | None) -> tuple[argparse.Namespace, Preset, list[int], list[str], int]:
    """The command line over a preset: --seeds, --ablation, --steps and the output paths override the preset's."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="experiment", choices=sorted(PRESETS), help="a named experiment")
    parser.add_argument("--out", default=None, help="runs and eval sweep go here (default: the preset's)")
    parser.add_argument("--seeds", default=None, help="paired seeds, comma-separated (default: the preset's)")
    parser.add_argument("--ablation", default=None, help="ablation variants (first seed), comma-separated")
    parser.add_argument("--steps", type=int, default=0, help="override the training steps (0 = the preset's)")
    parser.add_argument("--doc", default=None, help="the report to write (default: the preset's)")
    parser.add_argument("--json", default=None)
    parser.add_argument("--plots", default=None)
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset]
    for name in ("out", "doc", "json", "plots"):
        if getattr(args, name) is None:
            setattr(args, name, os.path.join(REPO, getattr(preset, name)))
    text = args.seeds if args.seeds is not None else ",".join(map(str, preset.seeds))
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(f"bench.science: --seeds={text!r} is not a comma-separated list of integers") from None
    if not seeds:
        raise SystemExit("bench.science: --seeds is empty")
    ablation = preset.ablation if args.ablation is None else [a for a in args.ablation.split(",") if a.strip()]
    return args, preset, seeds, list(ablation), args.steps or preset.steps


def environment(preset: Preset, root: str) -> dict:
    """The runs' environment: CPU presets hide any GPU (so the committed figures come from the CPU path)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    if not preset.gpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    env.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(root, "jax_cache"))
    return env


def check_prepared(preset: Preset) -> None:
    """A preset that reads carried shards stops at once, with the command that prepares them, when they are absent."""
    from data_pipelines import dataset

    if preset.prepared and not dataset.has_manifest(os.path.join(REPO, preset.prepared)):
        langs = [a for a in EXPERIMENT if a.startswith("--config.data.")]
        raise SystemExit(
            f"bench.science: no prepared shards in {preset.prepared}; prepare them where Beam is installed:\n"
            f"  python -m data_pipelines.prepare --config=configs/tiny.py --out={preset.prepared} "
            + " ".join(f'"{a}"' for a in langs)
        )


def main(argv: Sequence[str] | None = None) -> None:
    args, preset, seeds, ablation, steps = parse(argv)
    check_prepared(preset)
    root = os.path.abspath(args.out)
    env = environment(preset, root)
    run_list = runs(seeds, ablation, preset)
    began = time.perf_counter()
    workdirs = {r["name"]: train(r, root, run_args(r, preset, steps), env) for r in run_list}
    rows, dev_rows = sweep_all(run_list, workdirs, root, env, preset, steps)
    langs = retrieval_languages(rows)
    meta = dict(
        command="python -m bench.science " + " ".join(argv if argv is not None else sys.argv[1:]),
        date=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        machine=f"{machine_info().get('cpu', 'cpu')}, {os.cpu_count()} cores",
        minutes=round((time.perf_counter() - began) / 60, 1),
    )
    if preset.checkpoints > 1:
        from xlmp_jax import config_utils

        curves = {}
        for r in run_list:
            run = config_utils.load_run(r["config"], run_args(r, preset, steps))
            curves[r["name"]] = curve_points(
                rows, workdirs[r["name"]], run.train.batch_size * run.data.seq_length, langs
            )
        meta["flops"] = {r["name"]: step_flops(r["config"], run_args(r, preset, steps)) for r in run_list}
        write(curve_report(curves, run_list, meta), dict(meta=meta, runs=run_list, curves=curves), args)
        return
    low = low_resource_half(langs)
    paired_runs = {r["name"] for r in run_list if r["arm"] in CONFIGS}
    scalars = {name: per_run_scalars(rows, wd, langs, low) for name, wd in workdirs.items() if name in paired_runs}
    pool = {name: pool_values(rows, wd) for name, wd in workdirs.items() if name in paired_runs}
    ablation = ablation_summary(dev_rows, run_list, workdirs)
    plots = _copy_plots(os.path.join(root, "eval"), workdirs[f"xlmp_s{seeds[0]}"], args.plots)
    meta.update(plots=os.path.relpath(plots, REPO), compute=compute_line(run_list, preset, steps))
    meta.update(json=os.path.relpath(os.path.abspath(args.json), REPO))
    meta.update(overrides=" ".join(a for a in run_args(run_list[0], preset, steps) if ".seed=" not in a
                                   and ".pool." not in a and ".prepared_dir=" not in a))  # fmt: skip
    if preset.sizes[0][0] != "tiny":
        meta["size"] = f"size {preset.sizes[0][0]}: " + " ".join(preset.sizes[0][1])
    text, numbers = report(scalars, run_list, low, meta, pool, ablation)
    text += f"\nThe whole experiment took {meta['minutes']} min (training, evals and this report).\n"
    write(text + _kept_notes(args.doc), numbers, args)


def dev_languages() -> list[str]:
    """The experiment's languages that have transfer dev strings: the ablation's dev text."""
    from xlmp_jax.evals.heldout import transfer_dev_languages

    have = set(transfer_dev_languages())
    return [lang for lang in languages() if lang in have]


def dev_pair_settings(pairs: int = DEV_PAIRS) -> tuple[str, ...]:
    """Retrieval on dev pairs (``retrieval.pairs=transfer_dev``): the experiment's languages with at least
    ``pairs`` of them, each cut to ``pairs``, so that chance (1 / pairs) is the same in every language."""
    from xlmp_jax.evals.heldout import transfer_dev_languages, transfer_dev_pairs

    have = transfer_dev_pairs([x for x in transfer_dev_languages() if x != "en"], 0)
    langs = [lang for lang in languages() if lang in have and len(have[lang][0]) >= pairs]
    return (
        "--config.retrieval.pairs=transfer_dev", f"--config.retrieval.max_pairs={pairs}",
        f"--config.retrieval.languages={','.join(langs)}",
    )  # fmt: skip


def sweep_steps(preset: Preset, steps: int) -> str:
    """The checkpoints the sweep evaluates: the last, or the preset's evenly spaced ones (named, so that a run
    trained with more frequent checkpoints is evaluated at the same points)."""
    if preset.checkpoints == 1:
        return "latest"
    every = steps // preset.checkpoints
    return ",".join(str(every * i) for i in range(1, preset.checkpoints + 1))


def sweep_all(
    run_list: list[dict], workdirs: dict[str, str], root: str, env: dict, preset: Preset, run_steps: int
) -> tuple[list[dict], list[dict]]:
    """The preset's evals over the paired runs, and the ablation's dev sweep: its variants with XLM-P's runs of
    the same seeds, MLM and the pool on dev strings only (rows apart, as XLM-P's runs appear in both)."""
    steps = sweep_steps(preset, run_steps)
    paired_runs = [workdirs[r["name"]] for r in run_list if r["arm"] in CONFIGS]
    settings = dev_pair_settings() if preset.retrieval_pairs == "transfer_dev" else ()
    rows = sweep(paired_runs, os.path.join(root, "eval"), env, preset.evals, steps, settings=settings)
    variants = [r for r in run_list if r["arm"] not in CONFIGS]
    if not variants:
        return rows, []
    seeds = sorted({r["seed"] for r in variants})
    dev_runs = [workdirs[f"xlmp_s{s}"] for s in seeds] + [workdirs[r["name"]] for r in variants]
    dev_rows = sweep(dev_runs, os.path.join(root, "eval_ablation_dev"), env, ABLATION_EVALS, steps,
                     dev_languages(), ABLATION_DEV_SETTINGS)  # fmt: skip
    return rows, dev_rows


def write(text: str, numbers: dict, args: argparse.Namespace) -> None:
    """The report and its raw numbers, then the report on stdout."""
    os.makedirs(os.path.dirname(os.path.abspath(args.doc)), exist_ok=True)
    with open(args.doc, "w") as f:
        f.write(text)
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(numbers, f, indent=1, default=float)
    print(text)


# ----------------------------------------------------------------------------------------- the learning curve


def mean_at(rows: list[dict], workdir: str, step: int, eval_name: str, language: str, metric: str) -> float:
    """One metric of one checkpoint, averaged over the eval's fine-tuning seeds (NaN when absent)."""
    found = [
        float(r["value"])
        for r in rows
        if r["workdir"] == workdir and int(r["step"]) == step and r["eval"] == eval_name
        and r["language"] == language and r["metric"] == metric
    ]  # fmt: skip
    return float(np.mean(found)) if found else float("nan")


def curve_points(rows: list[dict], workdir: str, tokens_per_step: int, retrieval_langs: Sequence[str]) -> list[dict]:
    """Each checkpoint of one run: training tokens, MLM loss (mean over languages), retrieval top-1 (mean over
    pairs' languages), the transfer task's English dev accuracy and its zero-shot accuracy (other languages)."""
    out = []
    for step in sorted({int(r["step"]) for r in rows if r["workdir"] == workdir}):
        mlm = [mean_at(rows, workdir, step, "mlm", lang, "loss") for lang in languages()]
        ret = [mean_at(rows, workdir, step, "retrieval", lang, "acc_mean") for lang in retrieval_langs]
        out.append(
            dict(
                step=step,
                tokens=step * tokens_per_step,
                mlm_loss_mean=float(np.nanmean(mlm)) if np.isfinite(mlm).any() else float("nan"),
                retrieval_mean=float(np.nanmean(ret)) if np.isfinite(ret).any() else float("nan"),
                transfer_en_dev=mean_at(rows, workdir, step, "package", "en", "dev_accuracy"),
                transfer_zero_shot=mean_at(rows, workdir, step, "package", "all", "accuracy"),
                transfer_chance=mean_at(rows, workdir, step, "package", "all", "chance_uniform"),
            )
        )
    return out


def curve_report(curves: dict[str, list[dict]], run_list: list[dict], meta: dict) -> str:
    """The learning curve's report: one table per run, tokens against each metric, and where retrieval first
    passes 10 % top-1 (the point at which the retrieval target starts to apply)."""
    lines = [
        "# Learning curve of the baseline (no pool)",
        "",
        f"Produced by `{meta['command']}` on {meta['date']} ({meta['machine']}); {meta['minutes']} min.",
        "Checkpoints of each run, each evaluated by the eval sweep: MLM loss on validation lines (mean over "
        f"languages); retrieval top-1 on dev pairs (the transfer task's English dev strings and their "
        f"translations, {DEV_PAIRS} a language in the languages that have as many: chance {1 / DEV_PAIRS:.2f}; no "
        "sentence a report reads); the transfer task fine-tuned on English, its English dev accuracy and its "
        "zero-shot test accuracy on the other languages (chance in the last column). Where a comparison would "
        "be run is read from the dev columns only (retrieval, English dev).",
        f"Every run: `configs/tiny_baseline.py` with `{' '.join(EXPERIMENT)}`, then its size's overrides.",
        "",
    ]
    for run in run_list:
        points = curves[run["name"]]
        flops = meta.get("flops", {}).get(run["name"], float("nan"))
        lines += [
            f"## {run['name']} (size {run['size']}: `{' '.join(run['size_args']) or 'tiny'}`; "
            f"{_f(flops / 1e9, 2)} GFLOP a training step)",
            "",
            "| step | tokens (M) | MLM loss | retrieval top-1 | transfer: English dev | transfer: zero-shot | chance |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {p['step']} | {p['tokens'] / 1e6:.2f} | {_f(p['mlm_loss_mean'])} | {_f(p['retrieval_mean'])} "
            f"| {_f(p['transfer_en_dev'])} | {_f(p['transfer_zero_shot'])} | {_f(p['transfer_chance'])} |"
            for p in points
        ]
        passed = [p for p in points if p["retrieval_mean"] >= 0.10]
        lines += [
            "",
            f"Retrieval first at >= 10 % top-1: {passed[0]['tokens'] / 1e6:.2f} M tokens." if passed
            else "Retrieval stays below 10 % top-1 at every checkpoint.",
            "",
        ]  # fmt: skip
    return "\n".join(lines) + "\n"


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
