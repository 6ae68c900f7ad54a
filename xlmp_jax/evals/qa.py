"""The sweep side of XTREME's QA tasks (``xquad``, ``mlqa``, ``tydiqa``): where each task's data lives, its
settings block, and its rows. The fine-tuning and scoring are ``qa_finetune``'s.

As XTREME: XQuAD and MLQA train on SQuAD v1.1 train (dev: SQuAD v1.1 dev), TyDiQA-GoldP on its English
training set (dev: its English dev set); MLQA is scored with MLQA's per-language normalisation, context and
question in the same language (G-XLT off); XQuAD and TyDiQA with SQuAD's. Two test sets overlap the English
dev data: XQuAD's English paragraphs are SQuAD v1.1 dev paragraphs, and TyDiQA-GoldP's English test set is
its English dev set. Their rows carry ``in_english_dev`` = 1 so checkpoint selection never uses them.
"""

from __future__ import annotations

import dataclasses

import ml_collections

from xlmp_jax.evals import qa_data, qa_finetune
from xlmp_jax.evals.context import EvalContext, Row, split_list

TASKS = {
    "xquad": dict(
        languages=("en", "es", "de", "el", "ru", "tr", "ar", "vi", "th", "zh", "hi"),
        normalisation="squad",
        tfds_train=("squad/v1.1", "train", ""),
        tfds_dev=("squad/v1.1", "validation", ""),
        tfds_test=("xquad/{lang}", "test"),
        local_train=qa_data.SQUAD_TRAIN,
        local_dev=qa_data.SQUAD_DEV,
        local_test=qa_data.XQUAD_TEST,
        overlaps_dev="en",
    ),
    "mlqa": dict(
        languages=("en", "es", "de", "ar", "hi", "vi", "zh"),
        normalisation="mlqa",
        tfds_train=("squad/v1.1", "train", ""),
        tfds_dev=("squad/v1.1", "validation", ""),
        tfds_test=("mlqa/{lang}", "test"),
        local_train=qa_data.SQUAD_TRAIN,
        local_dev=qa_data.SQUAD_DEV,
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


def result_rows(task: str, result: qa_finetune.QAResult) -> list[Row]:
    """Per language exact_match / f1 / questions (plus in_english_dev where the test overlaps the dev data),
    the English dev scores as dev_*, the mean over test languages as 'all', and training diagnostics."""
    rows: list[Row] = []
    for lang, scores in result.tests.items():
        rows += [(lang, metric, value) for metric, value in scores.items()]
        if lang == TASKS[task]["overlaps_dev"]:
            rows.append((lang, "in_english_dev", 1.0))
    rows += [("en", f"dev_{metric}", value) for metric, value in result.dev.items()]
    for metric in ("exact_match", "f1"):
        rows.append(("all", metric, sum(s[metric] for s in result.tests.values()) / len(result.tests)))
    rows += [
        ("en", "train_loss_first", result.losses[0]),
        ("en", "train_loss_last", result.losses[-1]),
        ("en", "train_skipped", float(result.skipped)),
    ]
    return rows


def run(task: str, ctx: EvalContext, cfg: ml_collections.ConfigDict) -> list[Row]:
    """Fine-tunes a copy of the checkpoint on ``task``'s English training data; rows per test language."""
    train, dev, tests = read_data(task, cfg)
    fields = {f.name for f in dataclasses.fields(qa_finetune.QASettings)}
    settings = qa_finetune.QASettings(**{name: cfg[name] for name in fields})
    normalisation = TASKS[task]["normalisation"]
    result = qa_finetune.finetune_qa(
        ctx.encoder, ctx.tokenizer, train, dev, tests, ctx.sweep.seed, settings, normalisation
    )
    return result_rows(task, result)
