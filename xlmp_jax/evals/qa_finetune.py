"""Span-extraction QA fine-tuning: start/end logits from the final hidden states, trained on English and
scored zero-shot per language.

The head is ``finetune.FineTuner``'s per-token linear layer with two outputs (start, end) and its own
criterion: the mean of the start and end cross-entropies over each window's non-pad positions. Everything else
(AdamW with warmup + cosine decay, gradient clipping, batching, the encoder forward with the pool) is
``FineTuner``'s. ``finetune_qa`` is the unit that model selection and fine-tuning seeds wrap: (train, English
dev, tests by language, seed) -> per-language test scores and the dev score.
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
    decay 1e-4. ``steps`` > 0 overrides ``epochs``. Warmup as a fraction (XTREME: 500 steps) is our choice."""

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


@dataclasses.dataclass
class QAResult:
    """``tests``: language -> {exact_match, f1, questions}; ``dev``: the same for the English dev set;
    ``losses``: training loss per step; ``skipped``: training questions whose answer is not where it says."""

    tests: dict[str, dict[str, float]]
    dev: dict[str, float]
    losses: list[float]
    skipped: int


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
    """Fine-tunes a copy of ``encoder`` on ``train`` (English), scores ``dev`` (English) and every test
    language with ``normalisation`` (``squad`` or ``mlqa``, ``qa_metrics``)."""
    if normalisation not in qa_metrics.NORMALISATIONS:
        raise ValueError(f"normalisation {normalisation!r} is not one of {qa_metrics.NORMALISATIONS}")
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
            seed=seed,
        ),
        criterion=span_cross_entropy,
    )
    losses = tuner.fit([w.ids for w in windows], np.asarray([w.label for w in windows], np.int32))
    dev_scores = evaluate(tuner, tokenizer, dev, settings, normalisation, "en")
    test_scores = {lang: evaluate(tuner, tokenizer, ex, settings, normalisation, lang) for lang, ex in tests.items()}
    return QAResult(test_scores, dev_scores, losses, skipped)
