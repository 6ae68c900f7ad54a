"""Fine-tuning evals with zero-shot cross-lingual transfer: fine-tune on English, evaluate per language.

Two task kinds, as XTREME: ``classification`` (single sentences or sentence pairs, XNLI/PAWS-X style; a
linear head on the ``<s>`` or mean-pooled final hidden state) and ``tagging`` (NER/POS style; a linear
head on each word's first sub-token). The whole encoder is fine-tuned with AdamW in a small jitted loop
(fixed batch shape: one compilation). Here: the features, the head and its training loop, the scores
(accuracy, BIO span F1); the examples themselves come from ``transfer_data``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from xlmp_jax.evals.transfer_data import Example
from xlmp_jax.hf.encoder import Encoder, Tokenizer, encode_pair, encode_text, pad_rows, unwrap_params

Row = tuple[str, str, float]
KINDS = ("classification", "tagging")


# ---------------------------------------------------------------------------------------------- features


def featurize(
    examples: Sequence[Example], tokenizer: Tokenizer, kind: str, label_ids: Mapping[str, int], max_length: int
) -> tuple[list[list[int]], np.ndarray]:
    """Token rows and labels: [N] for classification, [N, max_length] (-1 = not a first sub-token) for tagging."""
    rows = []
    if kind == "classification":
        for ex in examples:
            if len(ex.texts) == 2:
                rows.append(encode_pair(tokenizer, ex.texts[0], ex.texts[1], max_length))
            else:
                rows.append(encode_text(tokenizer, ex.texts[0], max_length))
        return rows, np.asarray([label_ids.get(ex.label, -1) for ex in examples], np.int32)
    labels = np.full((len(examples), max_length), -1, np.int32)
    for n, ex in enumerate(examples):
        row = [tokenizer.bos_id]
        for word, tag in zip(ex.texts, ex.tags, strict=True):
            pieces = tokenizer.encode(word) or [getattr(tokenizer, "unk_id", 3)]
            if len(row) + len(pieces) > max_length - 1:
                break
            labels[n, len(row)] = label_ids.get(tag, -1)
            row += pieces
        rows.append([*row, tokenizer.eos_id])
    return rows, labels


# ---------------------------------------------------------------------------------------------- training


@dataclasses.dataclass(frozen=True)
class FinetuneSettings:
    steps: int = 200
    batch_size: int = 16
    learning_rate: float = 2e-5  # XTREME's fine-tuning range for XLM-R base. Our choice.
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01
    max_length: int = 128
    representation: str = "cls"  # "cls" (<s>) or "mean" (classification only)
    seed: int = 0


def _head_logits(model, kind: str, representation: str, params, ids, rng, deterministic: bool):
    mask = (ids != model.config.pad_token_id).astype(jnp.int32)
    rngs = None if deterministic else {"dropout": rng}
    out = model.apply(
        {"params": params["encoder"]}, ids, mask, compute_logits=False, deterministic=deterministic, rngs=rngs
    )
    hidden = out["hidden_states"].astype(jnp.float32)
    if kind == "classification":
        if representation == "mean":
            m = mask.astype(jnp.float32)[..., None]
            hidden = (hidden * m).sum(axis=1) / jnp.maximum(m.sum(axis=1), 1.0)
        else:
            hidden = hidden[:, 0]
    return hidden @ params["head"]["kernel"] + params["head"]["bias"]


def label_cross_entropy(logits: jax.Array, labels: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean cross-entropy over the labels >= 0 (one per row, or one per token for tagging)."""
    del mask  # the labels already mark what counts
    valid = (labels >= 0).astype(jnp.float32)
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(labels, 0))
    return (nll * valid).sum() / jnp.maximum(valid.sum(), 1.0)


def _loss(model, kind, representation, criterion, params, ids, labels, rng):
    logits = _head_logits(model, kind, representation, params, ids, rng, deterministic=False)
    return criterion(logits, labels, ids != model.config.pad_token_id)


Criterion = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]  # (logits, labels, token mask) -> loss


class FineTuner:
    """Fine-tunes one encoder + a fresh linear head; ``predict`` then labels new rows.

    ``criterion`` turns the head's logits ([B, C], or [B, T, C] for tagging), the labels and the non-pad
    token mask into the loss; other heads on per-token logits (QA's start/end) bring their own."""

    def __init__(
        self,
        encoder: Encoder,
        kind: str,
        num_labels: int,
        settings: FinetuneSettings,
        criterion: Criterion = label_cross_entropy,
    ):
        if kind not in KINDS:
            raise ValueError(f"fine-tuning kind {kind!r} is not one of {KINDS}")
        if settings.representation not in ("cls", "mean"):
            raise ValueError(f"representation {settings.representation!r} is not 'cls' or 'mean'")
        self.encoder, self.kind, self.settings = encoder, kind, settings
        self.model = encoder.model
        self.length = min(settings.max_length, encoder.config.max_length)
        key = jax.random.key(settings.seed)
        hidden = encoder.config.hidden_size
        self.params = {
            "encoder": jax.tree.map(lambda x: jnp.array(x, copy=True), unwrap_params(encoder.params)),
            "head": {
                "kernel": 0.02 * jax.random.normal(key, (hidden, num_labels), jnp.float32),
                "bias": jnp.zeros((num_labels,), jnp.float32),
            },
        }
        steps = max(settings.steps, 1)
        schedule = optax.warmup_cosine_decay_schedule(
            0.0, settings.learning_rate, max(1, int(steps * settings.warmup_fraction)), steps, 0.0
        )
        self.optimizer = optax.chain(
            optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=settings.weight_decay)
        )
        loss = functools.partial(_loss, self.model, kind, settings.representation, criterion)

        def step(params, opt_state, ids, labels, rng):
            value, grads = jax.value_and_grad(loss)(params, ids, labels, rng)
            updates, opt_state = self.optimizer.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, value

        self._step = jax.jit(step, donate_argnums=(0, 1))
        self._logits = jax.jit(
            functools.partial(_head_logits, self.model, kind, settings.representation, deterministic=True)
        )

    def fit(self, rows: Sequence[Sequence[int]], labels: np.ndarray) -> list[float]:
        """Runs ``settings.steps`` steps over shuffled epochs of the rows; returns the loss per step."""
        ids = pad_rows(rows, self.length, self.encoder.config.pad_token_id)
        labels = np.asarray(labels, np.int32)
        if self.kind == "tagging":
            labels = labels[:, : self.length]
        rng = np.random.default_rng(self.settings.seed)
        key = jax.random.key(self.settings.seed + 1)
        opt_state = self.optimizer.init(self.params)
        order: list[int] = []
        losses = []
        b = self.settings.batch_size
        for _ in range(self.settings.steps):
            while len(order) < b:
                order += rng.permutation(len(ids)).tolist()
            index, order = order[:b], order[b:]
            key, sub = jax.random.split(key)
            self.params, opt_state, loss = self._step(self.params, opt_state, ids[index], labels[index], sub)
            losses.append(float(loss))
        return losses

    def logits(self, rows: Sequence[Sequence[int]]) -> np.ndarray:
        """The head's fp32 logits: [N, C] for classification, [N, length, C] for tagging."""
        ids = pad_rows(rows, self.length, self.encoder.config.pad_token_id)
        b = self.settings.batch_size
        out = []
        for start in range(0, len(ids), b):
            chunk = ids[start : start + b]
            real = len(chunk)
            if real < b:
                chunk = np.concatenate([chunk, np.tile(chunk[:1], (b - real, 1))])
            out.append(np.asarray(self._logits(self.params, chunk, None))[:real])
        return np.concatenate(out)

    def predict(self, rows: Sequence[Sequence[int]]) -> np.ndarray:
        """Argmax labels: [N] for classification, [N, length] for tagging."""
        return np.argmax(self.logits(rows), axis=-1)


def spans(tags: Sequence[str]) -> set[tuple[int, int, str]]:
    """BIO entity spans (start, end, type); an I- without a matching open span starts a new one."""
    found, start, kind = set(), None, None
    for i, tag in enumerate([*tags, "O"]):
        prefix, _, label = tag.partition("-")
        if start is not None and (prefix != "I" or label != kind):
            found.add((start, i, kind))
            start = None
        if prefix == "B" or (prefix == "I" and start is None):
            start, kind = i, label
    return found


def span_f1(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> float:
    """Entity-level micro F1 over BIO spans (as seqeval's default for NER)."""
    tp = n_gold = n_pred = 0
    for g, p in zip(gold, pred, strict=True):
        gs, ps = spans(g), spans(p)
        tp += len(gs & ps)
        n_gold += len(gs)
        n_pred += len(ps)
    if tp == 0:
        return 0.0
    precision, recall = tp / n_pred, tp / n_gold
    return 2 * precision * recall / (precision + recall)


def zero_shot_eval(
    encoder: Encoder,
    tokenizer: Tokenizer,
    kind: str,
    train: Sequence[Example],
    tests: Mapping[str, Sequence[Example]],
    settings: FinetuneSettings,
) -> tuple[list[Row], list[float]]:
    """Fine-tunes on ``train`` (English), evaluates on every language in ``tests``: (rows, training losses)."""
    names = sorted({ex.label for ex in train} if kind == "classification" else {t for ex in train for t in ex.tags})
    if len(names) < 2:
        raise ValueError(f"{kind} training data has fewer than 2 distinct labels: {names}")
    label_ids = {name: i for i, name in enumerate(names)}
    length = min(settings.max_length, encoder.config.max_length)
    tuner = FineTuner(encoder, kind, len(names), settings)
    rows, labels = featurize(train, tokenizer, kind, label_ids, length)
    losses = tuner.fit(rows, labels)
    results: list[Row] = [("en", "train_loss_first", losses[0]), ("en", "train_loss_last", losses[-1])]
    for lang, examples in tests.items():
        test_rows, gold = featurize(examples, tokenizer, kind, label_ids, length)
        pred = tuner.predict(test_rows)
        if kind == "classification":
            results.append((lang, "accuracy", float((pred == gold).mean())))
        else:
            valid = gold >= 0
            results.append((lang, "accuracy", float((pred[valid] == gold[valid]).mean()) if valid.any() else 0.0))
            if any(n.startswith(("B-", "I-")) for n in names):
                gold_tags = [[names[g] for g in row[row >= 0]] for row in gold]
                pred_tags = [[names[p] for p in pr[row >= 0]] for pr, row in zip(pred, gold, strict=True)]
                results.append((lang, "f1", span_f1(gold_tags, pred_tags)))
        results.append((lang, "examples", float(len(examples))))
    accuracies = [v for lang, m, v in results if m == "accuracy"]
    results.append(("all", "accuracy", float(np.mean(accuracies))))
    return results, losses
