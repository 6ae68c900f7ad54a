"""The sweep side of XTREME's QA tasks (``xquad``, ``mlqa``, ``tydiqa``): where each task's data lives, its
settings block, and its rows. The fine-tuning and scoring are ``qa_finetune``'s.

As XTREME: XQuAD and MLQA train on SQuAD v1.1 train (dev: SQuAD v1.1 dev), TyDiQA-GoldP on its English
training set (dev: its English dev set); MLQA is scored with MLQA's per-language normalisation, context and
question in the same language (G-XLT off); XQuAD and TyDiQA with SQuAD's. Two test sets overlap the English
dev data: XQuAD's English paragraphs are SQuAD v1.1 dev paragraphs, and TyDiQA-GoldP's English test set is
its English dev set. Their scores are rows like the others' plus ``in_english_dev`` = 1, and they stay out of
the language mean (``all``) and the summary's task mean; selection only ever sees the English dev set.

Selection and seeds as the transfer tasks: each run picks its step by English dev F1 (every ``eval_every``
steps), and the block's ``seeds`` fine-tuning seeds are one sweep cell each.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import ml_collections

from xlmp_jax.evals import qa_data, qa_finetune, selection
from xlmp_jax.evals.context import EvalContext, Row, split_list
from xlmp_jax.hf.encoder import Encoder, Tokenizer

# XQuAD and MLQA both fine-tune on SQuAD v1.1 (train) and choose on its English dev set.
SQUAD_TRAINING = dict(
    tfds_train=("squad/v1.1", "train", ""),
    tfds_dev=("squad/v1.1", "validation", ""),
    local_train=qa_data.SQUAD_TRAIN,
    local_dev=qa_data.SQUAD_DEV,
)
TASKS = {
    "xquad": dict(
        SQUAD_TRAINING,
        languages=("en", "es", "de", "el", "ru", "tr", "ar", "vi", "th", "zh", "hi"),
        normalisation="squad",
        tfds_test=("xquad/{lang}", "test"),
        local_test=qa_data.XQUAD_TEST,
        overlaps_dev="en",
    ),
    "mlqa": dict(
        SQUAD_TRAINING,
        languages=("en", "es", "de", "ar", "hi", "vi", "zh"),
        normalisation="mlqa",
        tfds_test=("mlqa/{lang}", "test"),
        local_test=qa_data.MLQA_TEST,
        overlaps_dev="",
    ),
    "tydiqa": dict(
        languages=("en", "ar", "bn", "fi", "id", "ko", "ru", "sw", "te"),
        normalisation="squad",
        tfds_train=("tydi_qa/goldp", "train", "english-"),
        tfds_dev=("tydi_qa/goldp", "validation-en", ""),
        tfds_test=("tydi_qa/goldp", "validation-{lang}"),
        local_train=qa_data.TYDIQA_TRAIN,
        local_dev=qa_data.TYDIQA_DEV.format(lang="en"),
        local_test=qa_data.TYDIQA_DEV,
        overlaps_dev="en",
    ),
}


def config(task: str) -> ml_collections.ConfigDict:
    """The settings block of the QA eval ``task`` (one of ``TASKS``)."""
    settings = dataclasses.asdict(qa_finetune.QASettings())
    return ml_collections.ConfigDict(
        dict(
            source="auto",  # auto (tfds if data_dir, else local) | tfds | local
            data_dir="",  # TFDS data_dir with squad/v1.1, xquad/<lang>, mlqa/<lang> or tydi_qa/goldp prepared
            dir="",  # XTREME's download folder: squad/, xquad/, mlqa/MLQA_V1/, tydiqa/ as download_data.sh leaves it
            languages="",  # test languages; '' = XTREME's for this task
            max_train=0,  # training questions; 0 = all
            max_dev=2000,  # English dev questions scored (for checkpoint selection); 0 = all
            max_test=0,  # per language; 0 = all
            seeds=3,  # fine-tuning seeds (sweep seed, +1, ...): one sweep cell each
            **settings,
        )
    )


def read_data(
    task: str, cfg: ml_collections.ConfigDict
) -> tuple[list[qa_data.QAExample], list[qa_data.QAExample], dict[str, list[qa_data.QAExample]]]:
    """(English train, English dev, {language: test}) of ``task`` from TFDS or XTREME's download folder."""
    spec = TASKS[task]
    languages = split_list(cfg.languages) or list(spec["languages"])
    source = cfg.source
    if source == "auto":
        source = "tfds" if cfg.data_dir else "local"
    if source == "tfds":
        train = qa_data.read_tfds(*spec["tfds_train"][:2], cfg.data_dir, cfg.max_train, spec["tfds_train"][2])
        dev = qa_data.read_tfds(*spec["tfds_dev"][:2], cfg.data_dir, cfg.max_dev)
        name, split = spec["tfds_test"]
        tests = {
            lang: qa_data.read_tfds(name.format(lang=lang), split.format(lang=lang), cfg.data_dir, cfg.max_test)
            for lang in languages
        }
        return train, dev, tests
    if source == "local":
        if not cfg.dir:
            raise ValueError(f"{task}: set {task}.dir (XTREME's download folder) or {task}.data_dir (TFDS)")

        def read(relative: str, limit: int) -> list[qa_data.QAExample]:
            return qa_data.read_squad_json(qa_data.local_file(cfg.dir, relative, task), limit)

        tests = {lang: read(spec["local_test"].format(lang=lang), cfg.max_test) for lang in languages}
        return read(spec["local_train"], cfg.max_train), read(spec["local_dev"], cfg.max_dev), tests
    raise ValueError(f"{task}.source={cfg.source!r} is not one of auto, tfds, local")


def settings_of(cfg: ml_collections.ConfigDict) -> qa_finetune.QASettings:
    """The ``QASettings`` of a QA block."""
    return qa_finetune.QASettings(**{f.name: cfg[f.name] for f in dataclasses.fields(qa_finetune.QASettings)})


def check(cfg: ml_collections.ConfigDict, name: str) -> None:
    """Refuses a QA block that cannot run (seeds, selection, devices, window sizes), naming the field; the
    sweep calls it before any checkpoint is loaded."""
    selection.check_block(cfg, name)
    qa_finetune.check_settings(settings_of(cfg), name)


def task_scores(task: str, result: qa_finetune.QAResult) -> selection.TaskScores:
    """One run's ``TaskScores``: F1 per test language (the headline) at the dev-best step; EM, question counts,
    the English dev EM, training diagnostics and the languages whose test set is English dev data (their F1
    with ``in_english_dev`` = 1, outside the headline mean) as extra rows. EM and F1 as fractions in [0, 1],
    like every other task's scores (``qa_metrics`` gives percentages, as the official scripts print them)."""
    flagged = TASKS[task]["overlaps_dev"]
    tests = {lang: {m: v / 100 if m != "questions" else v for m, v in s.items()} for lang, s in result.tests.items()}
    dev = {m: v / 100 if m != "questions" else v for m, v in result.dev.items()}
    result = dataclasses.replace(result, tests=tests, dev=dev)
    headline = {lang: s["f1"] for lang, s in result.tests.items() if lang != flagged}
    if not headline:
        raise ValueError(
            f"{task}.languages={','.join(result.tests)!r}: only {flagged!r}, whose test set is English dev data; "
            "add another language"
        )
    extra: list[Row] = []
    for lang, scores in result.tests.items():
        extra += [(lang, "exact_match", scores["exact_match"]), (lang, "questions", scores["questions"])]
        if lang == flagged:
            extra += [(lang, "f1", scores["f1"]), (lang, "in_english_dev", 1.0)]
    extra.append(("all", "exact_match", sum(result.tests[lang]["exact_match"] for lang in headline) / len(headline)))
    extra += [("en", f"dev_{metric}", result.dev[metric]) for metric in ("exact_match", "questions")]
    extra += [
        ("en", "train_loss_first", result.losses[0]),
        ("en", "train_loss_last", result.losses[-1]),
        ("en", "train_skipped", float(result.skipped)),
    ]
    return selection.TaskScores("f1", headline, result.dev["f1"], result.best_step, tuple(extra))


def finetune_entry(
    task: str, encoder: Encoder, tokenizer: Tokenizer, settings: qa_finetune.QASettings
) -> selection.FinetuneEntry:
    """``task`` as the sweep's ``selection.FinetuneEntry`` on this encoder."""
    normalisation = TASKS[task]["normalisation"]

    def entry(
        train: Sequence[qa_data.QAExample],
        dev: Sequence[qa_data.QAExample],
        tests: Mapping[str, Sequence[qa_data.QAExample]],
        seed: int,
    ) -> selection.TaskScores:
        result = qa_finetune.finetune_qa(encoder, tokenizer, train, dev, tests, seed, settings, normalisation)
        return task_scores(task, result)

    return entry


def run(task: str, ctx: EvalContext, cfg: ml_collections.ConfigDict) -> list[Row]:
    """Fine-tunes a copy of the checkpoint on ``task``'s English training data with the cell's fine-tuning
    seed, selecting on English dev F1; rows per test language (``selection.task_rows``)."""
    check(cfg, task)
    train, dev, tests = read_data(task, cfg)
    seed = ctx.sweep.seed if ctx.seed is None else ctx.seed
    entry = finetune_entry(task, ctx.encoder, ctx.tokenizer, settings_of(cfg))
    return selection.task_rows(entry(train, dev, tests, seed))
