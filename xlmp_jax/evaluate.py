"""Eval sweeps: every checkpoint x every eval of a sweep config, skipping cells already computed.

    python -m xlmp_jax.evaluate --config=configs/eval_sweep.py \
        --config.workdirs=workdirs/tiny,workdirs/tiny_baseline --config.out=evals/tiny

A cell is (work directory, step, eval, that eval's settings); its key is recorded in ``OUT/cells.jsonl``
when it finishes, so re-running after adding a checkpoint (or after an interruption) computes only the
new cells. Outputs: ``results.csv`` / ``results.json`` (one row per checkpoint x eval x language x
metric), ``summary.md`` (with XLM-P vs baseline when both are swept), ``plots/``, ``tb/``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np
from tqdm import tqdm

from xlmp_jax import console

if __name__ == "__main__":  # the evals import TensorFlow: the CLI imports it first, without its C++ chatter
    console.import_tensorflow(hide_gpus=True)

from xlmp_jax.evals import finetune, mlm, pool_analysis, retrieval
from xlmp_jax.evals.results import Result, ResultStore, write_tensorboard
from xlmp_jax.hf.encoder import Encoder, Tokenizer
from xlmp_jax.model import ModelConfig

Row = tuple[str, str, float]


def split_list(value: Any) -> list[str]:
    """'a,b' / ('a', 'b') -> ['a', 'b'] (empty items dropped)."""
    items = value.split(",") if isinstance(value, str) else list(value or ())
    return [str(x).strip() for x in items if str(x).strip()]


# ----------------------------------------------------------------------------------------- checkpoints


class CheckpointSource:
    """Lists and loads a work directory's checkpoints (``xlmp_jax.checkpoint``, interface 7)."""

    def steps(self, workdir: str) -> list[int]:
        from xlmp_jax import checkpoint

        return checkpoint.all_steps(workdir)

    def load(self, workdir: str, step: int) -> tuple[ml_collections.ConfigDict, Any, int]:
        from xlmp_jax import checkpoint

        return checkpoint.load_params(workdir, step)


def select_steps(workdir: str, available: Sequence[int], steps: str) -> list[int]:
    """Resolves the ``steps`` setting (all | latest | comma-separated numbers) against ``available``."""
    if not available:
        raise FileNotFoundError(f"no checkpoint in work directory {workdir!r}")
    spec = str(steps).strip().lower()
    if spec in ("all", ""):
        return sorted(available)
    if spec == "latest":
        return [max(available)]
    wanted = []
    for item in split_list(spec):
        try:
            wanted.append(int(item))
        except ValueError:
            raise ValueError(f"steps={steps!r}: {item!r} is not 'all', 'latest' or a step number") from None
    missing = [s for s in wanted if s not in available]
    if missing:
        raise ValueError(f"step {missing[0]} not in work directory {workdir!r} (have: {sorted(available)})")
    return wanted


# -------------------------------------------------------------------------------------------- contexts


@dataclasses.dataclass
class EvalContext:
    """Everything one cell's eval needs."""

    workdir: str
    step: int
    run_config: ml_collections.ConfigDict
    encoder: Encoder
    settings: ml_collections.ConfigDict  # this eval's block of the sweep config
    sweep: ml_collections.ConfigDict
    artifact_dir: str

    @functools.cached_property
    def tokenizer(self) -> Tokenizer:
        path = vocab_path(self.run_config)
        tokenizer = load_tokenizer(path)
        size = getattr(tokenizer, "vocab_size", None)
        if size is not None and size != self.encoder.config.vocab_size:
            raise ValueError(
                f"vocabulary {path!r} has {size} ids but the checkpoint in {self.workdir!r} has "
                f"model.vocab_size={self.encoder.config.vocab_size}"
            )
        return tokenizer


def vocab_path(run_config: ml_collections.ConfigDict) -> str:
    data = run_config.get("data") or {}
    path = data.get("vocab_path", "")
    if not path:
        from data_pipelines.vocab import SAMPLE_VOCAB_PATH

        path = SAMPLE_VOCAB_PATH
    return path


@functools.lru_cache(maxsize=4)
def load_tokenizer(path: str) -> Tokenizer:
    from data_pipelines.vocab import XLMRVocabulary

    return XLMRVocabulary(path)


def validation_texts(languages: Sequence[str], max_sentences: int, text_dir: str = "") -> dict[str, list[str]]:
    """Held-out lines (the last 10 %, ``sample.split_lines``) of each language's monolingual file: the
    shipped sample's, or ``text_dir/<lang>.txt``. Non-empty lines, at most ``max_sentences`` (0 = all)."""
    from data_pipelines import sample

    texts = {}
    for lang in languages:
        path = os.path.join(text_dir, f"{lang}.txt") if text_dir else sample.mono_path(lang)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no text file for language {lang!r}: {path!r}")
        with open(path, encoding="utf-8") as f:
            lines = [line.strip() for line in f]
        lines = [line for line in sample.split_lines(lines, "validation") if line]
        texts[lang] = lines[:max_sentences] if max_sentences else lines
    return texts


def text_languages(setting: str, text_dir: str = "") -> list[str]:
    """The ``languages`` setting, or every ``<lang>.txt`` of ``text_dir``, or every sample language."""
    if split_list(setting):
        return split_list(setting)
    if text_dir:
        if not os.path.isdir(text_dir):
            raise FileNotFoundError(f"text_dir {text_dir!r} is not a directory")
        return sorted(n[: -len(".txt")] for n in os.listdir(text_dir) if n.endswith(".txt"))
    return _sample_languages("")


def _sample_languages(setting: str) -> list[str]:
    from data_pipelines import sample

    return split_list(setting) or list(sample.languages())


# ----------------------------------------------------------------------------------------------- evals


def eval_mlm(ctx: EvalContext) -> list[Row]:
    s = ctx.settings
    data_cfg = ctx.run_config.data
    languages = split_list(s.languages) or split_list(data_cfg.get("languages", ()))
    limit = s.max_batches or None
    if s.source == "pipeline":  # batches' `language` indexes the data config's full language list
        from data_pipelines.input_pipeline import make_eval_data

        if not languages:  # every language of the data config's source
            languages = list(make_eval_data(data_cfg, batch_size=s.batch_size).languages)
        parts = [make_eval_data(data_cfg, batch_size=s.batch_size, languages=[lang]) for lang in languages]
        batches = itertools.chain.from_iterable(itertools.islice(iter(p), limit) for p in parts)
        languages = list(parts[0].languages)
    elif s.source == "sample":
        languages = languages or _sample_languages("")
        texts = validation_texts(languages, 0)
        batches = mlm.sample_mlm_batches(
            ctx.tokenizer,
            texts,
            seq_length=int(data_cfg.get("seq_length", ctx.sweep.max_length)),
            mlm_rate=float(data_cfg.get("mlm_rate", 0.15)),
            mask_id=ctx.tokenizer.mask_id,
            batch_size=s.batch_size,
            seed=ctx.sweep.seed,
            max_batches=limit,
        )
    else:
        raise ValueError(f"mlm.source={s.source!r} is not 'pipeline' or 'sample'")
    return mlm.mlm_eval(ctx.encoder, batches, languages)


def retrieval_pairs(settings: ml_collections.ConfigDict) -> dict[str, tuple[list[str], list[str]]]:
    """{language: (english, other)} from one TSV, a folder of en-<lang>.tsv, or the shipped sample's held-out
    pairs (``sample.read_parallel(lang, "validation")``: never in any training split). Your own TSVs must be
    kept out of training by you (e.g. with ``sample.normalize`` against your corpus)."""
    if settings.tsv:
        name = os.path.basename(settings.tsv)
        lang = name[3:].split(".")[0] if name.startswith("en-") else "xx"
        return {lang: retrieval.read_pairs(settings.tsv, settings.max_pairs)}
    if settings.tsv_dir:
        if not os.path.isdir(settings.tsv_dir):
            raise FileNotFoundError(f"retrieval.tsv_dir {settings.tsv_dir!r} is not a directory")
        found = {f[3:-4]: os.path.join(settings.tsv_dir, f) for f in os.listdir(settings.tsv_dir)}
        found = {k: v for k, v in found.items() if os.path.basename(v).startswith("en-") and v.endswith(".tsv")}
    else:
        return _sample_retrieval_pairs(split_list(settings.languages), settings.max_pairs)
    languages = split_list(settings.languages) or sorted(found)
    missing = [lang for lang in languages if lang not in found]
    if missing:
        raise ValueError(f"no parallel TSV en-{missing[0]}.tsv (have: {sorted(found)})")
    return {lang: retrieval.read_pairs(found[lang], settings.max_pairs) for lang in languages}


def _sample_retrieval_pairs(languages: list[str], max_pairs: int) -> dict[str, tuple[list[str], list[str]]]:
    from data_pipelines import sample

    have = sample.parallel_languages()
    missing = [lang for lang in languages if lang not in have]
    if missing:
        raise ValueError(f"no parallel TSV en-{missing[0]}.tsv (have: {have})")
    out = {}
    for lang in languages or have:
        pairs = sample.read_parallel(lang, "validation")[: max_pairs or None]
        out[lang] = ([en.strip() for en, _ in pairs], [other.strip() for _, other in pairs])
    return out


def eval_retrieval(ctx: EvalContext) -> list[Row]:
    pairs = retrieval_pairs(ctx.settings)  # a bad TSV fails before anything is computed
    return retrieval.retrieval_eval(ctx.encoder, ctx.tokenizer, pairs, ctx.settings.layer)


def eval_pool(ctx: EvalContext) -> list[Row]:
    s = ctx.settings
    texts = validation_texts(text_languages(s.languages, s.text_dir), s.max_sentences, s.text_dir)
    title = f"{os.path.basename(os.path.normpath(ctx.workdir))} step {ctx.step} ({ctx.encoder.model_type})"
    repeats = pool_analysis.Repeats(s.shuffles, s.bootstrap_resamples, s.mantel_permutations)
    return pool_analysis.pool_eval(
        ctx.encoder, ctx.tokenizer, texts, ctx.artifact_dir, title=title, seed=ctx.sweep.seed, repeats=repeats
    )


def finetune_data(
    kind: str, s: ml_collections.ConfigDict, seed: int
) -> tuple[list[finetune.Example], dict[str, list[finetune.Example]]]:
    """(English training examples, {language: test examples}) from TFDS, local files or the sample."""
    source = s.source
    if source == "auto":
        source = "tfds" if s.data_dir else "local" if s.local_dir else "sample"
    reader = finetune.read_classification_tsv if kind == "classification" else finetune.read_conll
    if source == "local":
        train_path, test_paths = finetune.local_files(s.local_dir, kind)
        wanted = split_list(s.languages) or sorted(test_paths)
        missing = [lang for lang in wanted if lang not in test_paths]
        if missing:
            raise ValueError(f"{kind}: no test-{missing[0]} file in {s.local_dir!r} (have: {sorted(test_paths)})")
        return reader(train_path, s.max_train), {lang: reader(test_paths[lang], s.max_test) for lang in wanted}
    if source == "tfds":
        if not (s.tfds_train and s.tfds_test):
            raise ValueError(f"{kind}.source='tfds' needs {kind}.tfds_train and {kind}.tfds_test")
        from data_pipelines import sample

        wanted = split_list(s.languages) or sample.parallel_languages()
        train = finetune.tfds_examples(s.tfds_train, s.tfds_train_split, "en", s.data_dir, kind, s.max_train)
        tests = {
            lang: finetune.tfds_examples(s.tfds_test, s.tfds_test_split, lang, s.data_dir, kind, s.max_test)
            for lang in wanted
        }
        return train, tests
    if source == "sample":  # train: English of the training pairs; tests: the held-out pairs' other side
        from data_pipelines import sample

        wanted = split_list(s.languages) or sample.parallel_languages()
        english, tests = [], {}
        for lang in wanted:
            english += [en.strip() for en, _ in sample.read_parallel(lang, "train")]
            tests[lang] = [other.strip() for _, other in sample.read_parallel(lang, "validation")][: s.max_test or None]
        english = list(dict.fromkeys(english))[: s.max_train or None]
        if kind == "classification":
            return finetune.derived_classification(english, seed), {
                lang: finetune.derived_classification(t, seed) for lang, t in tests.items()
            }
        return finetune.derived_tagging(english), {lang: finetune.derived_tagging(t) for lang, t in tests.items()}
    raise ValueError(f"{kind}.source={s.source!r} is not one of auto, tfds, local, sample")


def _finetune_eval(kind: str, ctx: EvalContext) -> list[Row]:
    s = ctx.settings
    train, tests = finetune_data(kind, s, ctx.sweep.seed)
    settings = finetune.FinetuneSettings(
        steps=s.steps,
        batch_size=s.batch_size,
        learning_rate=s.learning_rate,
        warmup_fraction=s.warmup_fraction,
        weight_decay=s.weight_decay,
        max_length=s.max_length,
        representation=s.representation,
        seed=ctx.sweep.seed,
    )
    rows, _ = finetune.zero_shot_eval(ctx.encoder, ctx.tokenizer, kind, train, tests, settings)
    return rows


EvalFn = Callable[[EvalContext], list[Row]]
EVALS: dict[str, EvalFn] = {
    "mlm": eval_mlm,
    "retrieval": eval_retrieval,
    "pool": eval_pool,
    "classification": functools.partial(_finetune_eval, "classification"),
    "tagging": functools.partial(_finetune_eval, "tagging"),
}


# ----------------------------------------------------------------------------------------------- sweep


def cell_key(workdir: str, step: int, eval_name: str, settings: Mapping[str, Any]) -> str:
    """Identity of a cell: a changed setting (or the shared batch/length/seed) makes a new cell."""
    blob = json.dumps(settings, sort_keys=True, default=str)
    return f"{workdir}|{step}|{eval_name}|{hashlib.sha1(blob.encode()).hexdigest()[:12]}"


def eval_settings(sweep: ml_collections.ConfigDict, eval_name: str) -> dict[str, Any]:
    own = sweep.get(eval_name)
    own = own.to_dict() if isinstance(own, ml_collections.ConfigDict) else {}
    return {**own, "_shared": {k: sweep[k] for k in ("batch_size", "max_length", "seed")}}


def run_sweep(
    sweep: ml_collections.ConfigDict,
    *,
    evals: Mapping[str, EvalFn] | None = None,
    checkpoints: CheckpointSource | None = None,
) -> dict[str, Any]:
    """Runs every missing cell of the sweep; returns counts and the output paths."""
    evals = EVALS if evals is None else evals
    checkpoints = checkpoints or CheckpointSource()
    if not sweep.out:
        raise ValueError("out is empty: set --config.out=DIR for the results")
    workdirs = [os.path.abspath(w) for w in split_list(sweep.workdirs)]
    if not workdirs:
        raise ValueError("workdirs is empty: set --config.workdirs=DIR1,DIR2")
    names = split_list(sweep.evals)
    unknown = [n for n in names if n not in evals]
    if unknown:
        raise ValueError(f"unknown eval {unknown[0]!r} (known: {sorted(evals)})")
    if not names:
        raise ValueError("evals is empty")
    for workdir in workdirs:
        if not os.path.isdir(workdir):
            raise FileNotFoundError(f"work directory {workdir!r} does not exist")
    plan = []  # (workdir, step, [(eval, key)])
    for workdir in workdirs:
        for step in select_steps(workdir, checkpoints.steps(workdir), sweep.steps):
            plan.append((workdir, step, [(n, cell_key(workdir, step, n, eval_settings(sweep, n))) for n in names]))

    store = ResultStore(sweep.out)
    total = sum(len(cells) for _, _, cells in plan)
    computed, skipped, new_rows = 0, 0, []
    geometry = console.bar_geometry(sys.stderr)
    with tqdm(total=total, desc="eval sweep", unit="cell", disable=not sweep.progress, **geometry) as bar:
        for workdir, step, cells in plan:
            pending = [(n, k) for n, k in cells if k not in store]
            skipped += len(cells) - len(pending)
            bar.update(len(cells) - len(pending))
            if not pending:
                continue
            run_config, params, step = checkpoints.load(workdir, step)
            encoder = Encoder(ModelConfig.from_dict(run_config.model), params, sweep.batch_size, sweep.max_length)
            for name, key in pending:
                bar.set_postfix_str(f"{os.path.basename(workdir)}@{step} {name}")
                artifact_dir = os.path.join(
                    sweep.out, "plots", f"{os.path.basename(workdir)}-{key.rsplit('|', 1)[-1]}", f"{step}", name
                )
                ctx = EvalContext(workdir, step, run_config, encoder, sweep.get(name), sweep, artifact_dir)
                rows = [
                    Result(workdir, int(step), encoder.model_type, name, lang, metric, float(value))
                    for lang, metric, value in evals[name](ctx)
                ]
                store.add(key, rows)
                new_rows += rows
                computed += 1
                bar.update(1)
    csv_path, json_path = store.write_tables()
    summary = store.write_summary()
    tb = write_tensorboard(sweep.out, new_rows) if sweep.get("tensorboard", False) and new_rows else None
    return {
        "computed": computed,
        "skipped": skipped,
        "csv": csv_path,
        "json": json_path,
        "summary": summary,
        "tensorboard": tb,
        "rows": len(store.rows),
    }


def pool_report(workdir: str, languages: Sequence[str], out: str, text_dir: str = "") -> str:
    """What a run's pool learned, as a few console lines: the sweep's pool eval of its last checkpoint on the
    held-out (validation) lines of ``languages`` (empty: every language of ``text_dir`` / the sample), with
    the chance control; its plots go under ``out``."""
    from configs import eval_sweep

    sweep = eval_sweep.get_config()
    sweep.update(dict(workdirs=workdir, out=out, steps="latest", evals="pool", progress=False, tensorboard=False))
    languages = text_languages(",".join(languages), text_dir)
    sweep.pool.update(dict(languages=",".join(languages), text_dir=text_dir))
    run_sweep(sweep)
    rows = {(r.language, r.metric): r.value for r in ResultStore(out).rows}

    def get(key: tuple[str, str]) -> float:
        return rows.get(key, float("nan"))

    ami = "ami_prompt_language"
    top = ", ".join(f"{lang} {int(get((lang, 'top_prompt')))}" for lang in languages if (lang, "top_prompt") in rows)
    plots = sorted({os.path.dirname(p) for p in _files(os.path.join(out, "plots"), ".png")})
    return "\n".join(
        [
            f"what the pool learned (held-out lines of {len(languages)} languages):",
            f"  AMI(top prompt, language) = {get(('all', ami)):.3f}; shuffled languages: 99th percentile "
            f"{get(('all', ami + '_shuffled_p99')):.3f}, p = {get(('all', ami + '_p_value')):.3g}; "
            f"vs script {get(('all', 'ami_prompt_script')):.3f}",
            f"  prompts in use: {get(('all', 'effective_prompts')):.1f} effective; "
            f"{100 * get(('all', 'pool_fraction_top')):.0f} % of the pool is some input's top prompt",
            f"  top prompt per language: {top}",
            f"  plots (routing heatmap, language dendrogram): {plots[-1] if plots else out}",
        ]
    )


def _files(root: str, suffix: str) -> list[str]:
    return [os.path.join(d, f) for d, _, names in os.walk(root) for f in names if f.endswith(suffix)]


def main(argv: Sequence[str]) -> None:
    del argv
    from xlmp_jax import compile_cache

    console.quiet_library_logs()  # no Orbax INFO lines ("Restoring checkpoint from ...") under the progress bar
    sweep = _CONFIG.value
    try:
        compile_cache.enable(sweep.compilation_cache_dir)  # before the first checkpoint's programs compile
        result = run_sweep(sweep)
    except (ValueError, FileNotFoundError) as e:  # bad input: one clear line, no traceback
        raise SystemExit(f"xlmp_jax.evaluate: error: {e}") from None
    print(json.dumps(result, indent=1, default=lambda x: float(x) if isinstance(x, np.floating) else str(x)))


if __name__ == "__main__":
    from absl import app
    from ml_collections import config_flags

    _CONFIG = config_flags.DEFINE_config_file(
        "config",
        os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "eval_sweep.py"),
        "Sweep config (configs/eval_sweep.py).",
    )
    app.run(main)
