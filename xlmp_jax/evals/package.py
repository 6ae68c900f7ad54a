"""The sweep's ``package`` eval: zero-shot cross-lingual transfer on the shipped task of which package group
an interface string comes from (``data_pipelines/sample/transfer/``; built by ``data_pipelines.build_transfer``).

The split is by English source string (``sample.transfer_split``): fine-tune on the English ``train`` strings,
choose the learning rate (of ``learning_rates``) and the step (every ``eval_every``) on English ``dev`` only,
then score the English ``test`` strings and their translations, strings never fine-tuned on in any language
(the held-out rule keeps every dev and test text out of every training split). Each fine-tuning seed is a
sweep cell (``seeds``). Rows, per cell: ``accuracy`` of English (``en``) and of each target language, ``all``
= the mean over the target languages; the references computed on the same strings beside them:
``chance_uniform`` (1 / labels), ``majority_rate`` (the share of the language's most frequent test label: what
the best constant answer scores there) and ``ngram_accuracy`` (``ngram_baseline``: character n-grams fitted on
the English train strings); the choice: ``en`` ``dev_accuracy``, ``best_step``, ``learning_rate`` and each
learning rate's best dev accuracy (``dev_accuracy@lr=<lr>``); ``examples`` per language.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Sequence

import ml_collections

from data_pipelines import sample
from xlmp_jax.evals import finetune, ngram_baseline, transfer
from xlmp_jax.evals.context import EvalContext, Row, split_list
from xlmp_jax.evals.transfer_data import Example
from xlmp_jax.hf.encoder import Encoder, Tokenizer

NAME = "package"


def config(**overrides) -> ml_collections.ConfigDict:
    """Settings of the package-group transfer eval."""
    c = ml_collections.ConfigDict(
        dict(
            languages="",  # target languages; '' = every language of the task file
            # Fine-tuning grid, chosen per seed on English dev. For the tiny models (pre-trained at 3e-3): on
            # English dev every rate of this grid wins some seed and none wins at 1e-4. Base sizes: XTREME's range.
            learning_rates="3e-4,1e-3,3e-3",
            steps=600,  # ~17 epochs of the 566 English train strings at batch 16; tiny's dev-best steps: 250-550
            batch_size=16,
            warmup_fraction=0.1,
            weight_decay=0.01,
            max_length=64,  # tokens; the strings are one short sentence each
            representation="cls",  # cls (<s>) or mean
            eval_every=50,  # score English dev every this many steps (and after the last)
            seeds=3,  # fine-tuning seeds (sweep seed, +1, ...): one sweep cell each
            devices=0,  # data-parallel devices; 0 = the most local devices that divide batch_size; 1 = one
            shard_params=False,  # FSDP over those devices (params and Adam moments split)
            ngram_baseline=True,  # the character n-gram reference rows (``ngram_accuracy``)
        )
    )
    c.update(overrides)
    return c


def learning_rates(cfg: ml_collections.ConfigDict, name: str = NAME) -> list[float]:
    """The ``learning_rates`` grid as positive floats (a bad item is named)."""
    rates = []
    for item in split_list(cfg.learning_rates):
        try:
            rate = float(item)
        except ValueError:
            raise ValueError(f"{name}.learning_rates: {item!r} is not a number") from None
        if not rate > 0:
            raise ValueError(f"{name}.learning_rates: {item!r} is not positive")
        rates.append(rate)
    if not rates:
        raise ValueError(f"{name}.learning_rates is empty")
    return rates


def check(cfg: ml_collections.ConfigDict, name: str) -> None:
    """Refuses settings that cannot run before any checkpoint is read (the sweep calls it)."""
    learning_rates(cfg, name)
    if not isinstance(cfg.steps, int) or cfg.steps < 1:
        raise ValueError(f"{name}.steps={cfg.steps!r} is not a step count >= 1")
    if cfg.representation not in ("cls", "mean"):
        raise ValueError(f"{name}.representation={cfg.representation!r} is not 'cls' or 'mean'")
    task_data(cfg, name)


@dataclasses.dataclass(frozen=True)
class TaskData:
    """English ``train`` and ``dev`` examples; ``tests``: English (``en``) first, then each target language."""

    train: list[Example]
    dev: list[Example]
    tests: dict[str, list[Example]]


def task_data(cfg: ml_collections.ConfigDict, name: str = NAME) -> TaskData:
    """The task's splits from the shipped file (``sample.read_transfer``), as classification examples."""
    every = sample.read_transfer()
    if not every:
        raise FileNotFoundError(f"{name}: no transfer task file {sample.transfer_path()!r}")
    known = sorted({lang for it in every for lang in it.translations})
    wanted = split_list(cfg.languages) or known
    unknown = [lang for lang in wanted if lang not in known]
    if unknown:
        raise ValueError(f"{name}.languages: {unknown[0]!r} has no translations in the task (have: {known})")
    test = sample.read_transfer("test")
    tests = {"en": [Example((it.english,), it.label) for it in test]}
    for lang in wanted:
        tests[lang] = [Example((it.translations[lang],), it.label) for it in test if lang in it.translations]
    train = [Example((it.english,), it.label) for it in sample.read_transfer("train")]
    dev = [Example((it.english,), it.label) for it in sample.read_transfer("dev")]
    return TaskData(train, dev, tests)


def reference_rows(data: TaskData, baseline: bool) -> list[Row]:
    """Chance and, with ``baseline``, the n-gram baseline on the same splits (the same in every seed's cell)."""
    labels = sorted({ex.label for ex in data.train})
    rows: list[Row] = [("all", "chance_uniform", 1.0 / len(labels))]
    for lang, examples in data.tests.items():
        counts = collections.Counter(ex.label for ex in examples)
        rows.append((lang, "majority_rate", max(counts.values()) / len(examples)))
    if not baseline:
        return rows
    model = ngram_baseline.fit([ex.texts[0] for ex in data.train], [ex.label for ex in data.train])

    def score(examples: Sequence[Example]) -> float:
        return ngram_baseline.accuracy(model, [ex.texts[0] for ex in examples], [ex.label for ex in examples])

    rows.append(("en", "ngram_dev_accuracy", score(data.dev)))
    targets = {lang: score(ex) for lang, ex in data.tests.items()}
    rows += [(lang, "ngram_accuracy", value) for lang, value in targets.items()]
    others = [v for lang, v in targets.items() if lang != "en"]
    if others:
        rows.append(("all", "ngram_accuracy", sum(others) / len(others)))
    return rows


def finetune_rows(
    encoder: Encoder,
    tokenizer: Tokenizer,
    data: TaskData,
    settings: finetune.FinetuneSettings,
    rates: Sequence[float],
) -> list[Row]:
    """Fine-tunes at each learning rate with dev selection; the test rows of the dev-best (rate, step)."""
    names = sorted({ex.label for ex in data.train})
    label_ids = {n: i for i, n in enumerate(names)}
    length = min(settings.max_length, encoder.config.max_length)
    rows_in, labels = finetune.featurize(data.train, tokenizer, "classification", label_ids, length)
    best, best_choice, rows = None, None, []
    for rate in rates:
        tuner = finetune.FineTuner(
            encoder, "classification", len(names), dataclasses.replace(settings, learning_rate=rate)
        )
        chosen = tuner.fit_selected(
            rows_in, labels, lambda tuner=tuner: finetune.scores(tuner, data.dev, tokenizer, names)["accuracy"]
        )
        rows.append(("en", f"dev_accuracy@lr={rate:g}", chosen.dev_score))
        if best_choice is None or chosen.dev_score > best_choice[1].dev_score:  # a tie keeps the earlier rate
            best, best_choice = tuner, (rate, chosen)
    assert best is not None and best_choice is not None
    rate, chosen = best_choice
    rows += [
        ("en", "dev_accuracy", chosen.dev_score),
        ("en", "best_step", float(chosen.step)),
        ("en", "learning_rate", rate),
        ("en", "train_loss_last", best.losses[-1]),
    ]
    targets = {}
    for lang, examples in data.tests.items():
        targets[lang] = finetune.scores(best, examples, tokenizer, names)["accuracy"]
        rows += [(lang, "accuracy", targets[lang]), (lang, "examples", float(len(examples)))]
    others = [v for lang, v in targets.items() if lang != "en"]
    if others:
        rows.append(("all", "accuracy", sum(others) / len(others)))
    return rows


def run(ctx: EvalContext, cfg: ml_collections.ConfigDict) -> list[Row]:
    """One fine-tuning seed's cell: the fine-tuned rows, then the references."""
    data = task_data(cfg)
    seed = ctx.sweep.seed if ctx.seed is None else ctx.seed
    rows = finetune_rows(ctx.encoder, ctx.tokenizer, data, transfer.settings_of(cfg, seed), learning_rates(cfg))
    return rows + reference_rows(data, cfg.ngram_baseline)
