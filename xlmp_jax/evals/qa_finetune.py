"""Span-extraction QA fine-tuning: start/end logits from the final hidden states, trained on English and
scored zero-shot per language.

The head is ``finetune.FineTuner``'s per-token linear layer with two outputs (start, end) and its own
criterion: the mean of the start and end cross-entropies over each window's non-pad positions. Everything else
(AdamW with warmup + cosine decay, gradient clipping, batching, the encoder forward with the pool) is
``FineTuner``'s, and so is checkpoint selection: English dev F1 is scored every ``eval_every`` steps
(``FineTuner.fit_selected``) and the tests are scored with the dev-best parameters. ``finetune_qa`` is one
fine-tuning run: (train, English dev, tests by language, seed) -> per-language test scores at the dev-best
step; ``qa.finetune_entry`` turns it into the sweep's ``selection.FinetuneEntry``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from xlmp_jax.evals import qa_metrics, qa_windows
from xlmp_jax.evals.finetune import FineTuner, FinetuneSettings
from xlmp_jax.evals.qa_data import QAExample
from xlmp_jax.hf.encoder import Encoder, Tokenizer


@dataclasses.dataclass(frozen=True)
class QASettings:
    """XTREME's ``train_qa.sh`` values where it sets them: 384-token windows, stride 128, questions cut at 64
    tokens, answers at most 30 tokens, learning rate 3e-5, batch 32 (4 x 8 accumulation), 3 epochs, weight
    decay 1e-4. ``steps`` > 0 overrides ``epochs``. Warmup as a fraction (XTREME: 500 steps) is our choice, as
    are ``eval_every`` (English dev F1 every 1000 steps, and after the last) and ``devices`` (data-parallel
    devices; 0 = the most local devices that divide ``batch_size``)."""

    steps: int = 0
    epochs: float = 3.0
    batch_size: int = 32
    learning_rate: float = 3e-5
    warmup_fraction: float = 0.1
    weight_decay: float = 1e-4
    max_length: int = 384
    doc_stride: int = 128
    max_query_length: int = 64
    max_answer_length: int = 30
    eval_every: int = 1000
    devices: int = 0
    shard_params: bool = False  # FSDP over the devices (FinetuneSettings.shard_params)


CONTEXT_SPECIALS = 4  # <s> question </s></s> context </s>: the tokens of a window that are neither


def check_settings(settings: QASettings, name: str = "qa") -> None:
    """Refuses window settings that cannot work together, naming the field (``name``: the settings block)."""
    for field in ("max_length", "doc_stride", "max_query_length", "max_answer_length", "batch_size"):
        value = getattr(settings, field)
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}.{field}={value!r} is not a positive number of tokens")
    room = settings.max_length - settings.max_query_length - CONTEXT_SPECIALS
    if room < 1:
        raise ValueError(
            f"{name}.max_length={settings.max_length} leaves no room for context after a "
            f"{name}.max_query_length={settings.max_query_length}-token question and {CONTEXT_SPECIALS} special tokens"
        )
    if settings.doc_stride > room:
        raise ValueError(
            f"{name}.doc_stride={settings.doc_stride} is larger than a window's context ({room} tokens = "
            f"max_length {settings.max_length} - max_query_length {settings.max_query_length} - "
            f"{CONTEXT_SPECIALS} special tokens): windows would skip context"
        )


@dataclasses.dataclass
class QAResult:
    """``tests``: language -> {exact_match, f1, questions} with the dev-best parameters; ``dev``: the same for
    the English dev set at that step (``best_step``; ``history``: every (step, dev F1) scored); ``losses``:
    training loss per step; ``skipped``: training questions whose answer is not where it says."""

    tests: dict[str, dict[str, float]]
    dev: dict[str, float]
    losses: list[float]
    skipped: int
    best_step: int = 0
    history: tuple[tuple[int, float], ...] = ()


def span_cross_entropy(logits: jax.Array, labels: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean over rows of (start CE + end CE) / 2; logits [B, T, 2], labels [B, 2], pads never predicted."""
    logits = jnp.where(mask[..., None], logits, -1e9)
    start = optax.softmax_cross_entropy_with_integer_labels(logits[..., 0], labels[:, 0])
    end = optax.softmax_cross_entropy_with_integer_labels(logits[..., 1], labels[:, 1])
    return ((start + end) / 2).mean()


def predict(tuner: FineTuner, tokenizer: Tokenizer, examples: Sequence[QAExample], settings: QASettings) -> list[str]:
    """The answer text per example (best span over its windows)."""
    windows, _ = qa_windows.make_windows(
        examples, tokenizer, tuner.length, settings.doc_stride, settings.max_query_length
    )
    logits = tuner.logits([w.ids for w in windows])
    return qa_windows.best_answers(examples, windows, logits[..., 0], logits[..., 1], settings.max_answer_length)


def evaluate(
    tuner: FineTuner,
    tokenizer: Tokenizer,
    examples: Sequence[QAExample],
    settings: QASettings,
    normalisation: str,
    lang: str,
) -> dict[str, float]:
    answers = predict(tuner, tokenizer, examples, settings)
    scores = qa_metrics.score(answers, [ex.answers for ex in examples], normalisation, lang)
    return {**scores, "questions": float(len(examples))}


def finetune_qa(
    encoder: Encoder,
    tokenizer: Tokenizer,
    train: Sequence[QAExample],
    dev: Sequence[QAExample],
    tests: Mapping[str, Sequence[QAExample]],
    seed: int,
    settings: QASettings = QASettings(),
    normalisation: str = "squad",
) -> QAResult:
    """Fine-tunes a copy of ``encoder`` on ``train`` (English), choosing the step by F1 on ``dev`` (English),
    and scores every test language with those parameters and ``normalisation`` (``squad`` or ``mlqa``)."""
    if normalisation not in qa_metrics.NORMALISATIONS:
        raise ValueError(f"normalisation {normalisation!r} is not one of {qa_metrics.NORMALISATIONS}")
    check_settings(settings)
    if not dev:
        raise ValueError("no English dev question: QA chooses its checkpoint by English dev F1")
    length = min(settings.max_length, encoder.config.max_length)
    windows, skipped = qa_windows.make_windows(
        train, tokenizer, length, settings.doc_stride, settings.max_query_length, training=True
    )
    if not windows:
        raise ValueError(f"no usable QA training example ({skipped} of {len(train)} skipped: answer not in context)")
    steps = settings.steps or max(1, math.ceil(settings.epochs * len(windows) / settings.batch_size))
    tuner = FineTuner(
        encoder,
        "tagging",
        2,
        FinetuneSettings(
            steps=steps,
            batch_size=settings.batch_size,
            learning_rate=settings.learning_rate,
            warmup_fraction=settings.warmup_fraction,
            weight_decay=settings.weight_decay,
            max_length=length,
            eval_every=settings.eval_every,
            devices=settings.devices,
            shard_params=settings.shard_params,
            seed=seed,
        ),
        criterion=span_cross_entropy,
    )
    dev_at: dict[int, dict[str, float]] = {}

    def dev_f1() -> float:
        dev_at[len(tuner.losses)] = evaluate(tuner, tokenizer, dev, settings, normalisation, "en")
        return dev_at[len(tuner.losses)]["f1"]

    rows, labels = [w.ids for w in windows], np.asarray([w.label for w in windows], np.int32)
    chosen = tuner.fit_selected(rows, labels, dev_f1)  # leaves the dev-best parameters in the tuner
    test_scores = {lang: evaluate(tuner, tokenizer, ex, settings, normalisation, lang) for lang, ex in tests.items()}
    return QAResult(test_scores, dev_at[chosen.step], list(tuner.losses), skipped, chosen.step, chosen.history)
