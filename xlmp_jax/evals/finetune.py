"""Fine-tuning evals with zero-shot cross-lingual transfer: fine-tune on English, evaluate per language.

Two task kinds, as XTREME: ``classification`` (single sentences or sentence pairs, XNLI/PAWS-X style; a
linear head on the ``<s>`` or mean-pooled final hidden state) and ``tagging`` (NER/POS style; a linear
head on each word's first sub-token). The whole encoder is fine-tuned with AdamW in a small jitted loop
(fixed batch shape: one compilation, shared by every run of the same architecture and settings). With
more than one device the batch is split over the devices (``sharding``'s batch axes) and the parameters are
replicated, or, with ``shard_params``, split FSDP-style by the pre-training rules (``sharding.default_rules()``:
the encoder's parameters and Adam moments over the ``fsdp`` axis), so a model whose fine-tuning state does not
fit one device still fine-tunes; both give the single-device numbers to float tolerance. The checkpoint
reported is the one with the best English dev score (``selection``). Here: the features, the head and its
training loop, the scores (accuracy, BIO span F1); the examples themselves come from ``transfer_data``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from xlmp_jax.evals import selection
from xlmp_jax.evals.transfer_data import Example
from xlmp_jax.hf.encoder import Encoder, Tokenizer, encode_pair, encode_text, pad_rows, unwrap_params
from xlmp_jax.model.model_config import ModelConfig
from xlmp_jax.model.xlmp import XLMP, init_params
from xlmp_jax.training import sharding

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
    eval_every: int = 0  # score English dev every this many steps (and after the last); 0 = after the last only
    devices: int = 1  # data-parallel devices; 0 = the most local devices that divide batch_size
    shard_params: bool = False  # FSDP over those devices: the encoder's params and Adam moments split, not copied
    seed: int = 0


def finetune_mesh(batch_size: int, devices: int, shard_params: bool = False) -> Mesh | None:
    """A mesh over ``devices`` local devices with its one axis of size > 1 ``data`` (parameters copied) or
    ``fsdp`` (``shard_params``: parameters split), named as ``sharding``'s; None for one device;
    ``devices=0`` takes the most local devices that divide ``batch_size``."""
    available = jax.local_devices()
    if devices < 0:
        raise ValueError(f"devices={devices} is negative (0 = as many local devices as divide batch_size)")
    if devices == 0:
        devices = max(n for n in range(1, len(available) + 1) if batch_size % n == 0)
    if devices > len(available):
        raise ValueError(f"devices={devices} but this host has {len(available)} local devices")
    if batch_size % devices:
        raise ValueError(f"batch_size={batch_size} is not divisible by devices={devices}")
    if devices == 1:
        return None
    grid = np.asarray(available[:devices]).reshape((1, devices, 1) if shard_params else (devices, 1, 1))
    return Mesh(grid, sharding.MESH_AXES)


def _param_shardings(config: ModelConfig, mesh: Mesh, params: Mapping[str, Any]) -> Any:
    """Where each fine-tuning parameter lives: the encoder's by the pre-training logical rules (FSDP over
    ``fsdp`` on this mesh), the small head replicated."""
    boxed = jax.eval_shape(lambda: init_params(config, jax.random.key(0)))["params"]
    encoder = sharding.logical_shardings(boxed, mesh)
    return {"encoder": encoder, "head": jax.tree.map(lambda _: sharding.replicated(mesh), params["head"])}


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


Criterion = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]  # (logits, labels, token mask) -> loss


def _loss(model, kind, representation, criterion, params, ids, labels, rng):
    logits = _head_logits(model, kind, representation, params, ids, rng, deterministic=False)
    return criterion(logits, labels, ids != model.config.pad_token_id)


@functools.lru_cache(maxsize=16)
def _programs(
    config: ModelConfig,
    kind: str,
    representation: str,
    criterion: Criterion,
    steps: int,
    lr: float,
    warmup: float,
    wd: float,
):
    """(optimizer, jitted train step, jitted logits) of one architecture and schedule: cached, so every
    fine-tuning seed and work directory of the same shape reuses the compiled programs."""
    model = XLMP(config)
    schedule = optax.warmup_cosine_decay_schedule(0.0, lr, max(1, int(steps * warmup)), steps, 0.0)
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=wd))
    loss = functools.partial(_loss, model, kind, representation, criterion)

    def step(params, opt_state, ids, labels, rng):
        value, grads = jax.value_and_grad(loss)(params, ids, labels, rng)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    logits = jax.jit(functools.partial(_head_logits, model, kind, representation, deterministic=True))
    return optimizer, jax.jit(step, donate_argnums=(0, 1)), logits


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
        self.mesh = finetune_mesh(settings.batch_size, settings.devices, settings.shard_params)
        key = jax.random.key(settings.seed)
        hidden = encoder.config.hidden_size
        params = {
            "encoder": jax.tree.map(lambda x: jnp.array(x, copy=True), unwrap_params(encoder.params)),
            "head": {
                "kernel": 0.02 * jax.random.normal(key, (hidden, num_labels), jnp.float32),
                "bias": jnp.zeros((num_labels,), jnp.float32),
            },
        }
        self._shardings = None
        if self.mesh is not None:
            self._shardings = (
                _param_shardings(encoder.config, self.mesh, params)
                if settings.shard_params
                else jax.tree.map(lambda _: sharding.replicated(self.mesh), params)
            )
            params = jax.device_put(params, self._shardings)
        self.params = params
        self.optimizer, self._step, self._logits = _programs(
            encoder.config,
            kind,
            settings.representation,
            criterion,
            max(settings.steps, 1),
            settings.learning_rate,
            settings.warmup_fraction,
            settings.weight_decay,
        )
        self.losses: list[float] = []

    def _place_optimizer_state(self, opt_state):
        """Adam's moments where their parameters are; the optimizer's scalars replicated."""
        if self.mesh is None:
            return opt_state
        replicated = sharding.replicated(self.mesh)
        placed = optax.tree_map_params(
            self.optimizer,
            lambda x, where: jax.device_put(x, where),
            opt_state,
            self._shardings,
            transform_non_params=lambda x: jax.device_put(x, replicated),
        )
        return placed

    def _batch(self, array: np.ndarray):
        return array if self.mesh is None else jax.device_put(array, sharding.batch_sharding(self.mesh))

    def start(self, rows: Sequence[Sequence[int]], labels: np.ndarray) -> None:
        """Sets up training on these rows (optimizer state, batch order); ``advance`` then takes steps."""
        self._ids = pad_rows(rows, self.length, self.encoder.config.pad_token_id)
        labels = np.asarray(labels, np.int32)
        self._labels = labels[:, : self.length] if self.kind == "tagging" else labels
        self._rng = np.random.default_rng(self.settings.seed)
        self._key = jax.random.key(self.settings.seed + 1)
        self._opt_state = self._place_optimizer_state(self.optimizer.init(self.params))
        self._order: list[int] = []
        self.losses = []

    def advance(self, steps: int) -> None:
        """``steps`` more training steps over shuffled epochs of the rows given to ``start``."""
        b = self.settings.batch_size
        for _ in range(steps):
            while len(self._order) < b:
                self._order += self._rng.permutation(len(self._ids)).tolist()
            index, self._order = self._order[:b], self._order[b:]
            self._key, sub = jax.random.split(self._key)
            ids, labels = self._batch(self._ids[index]), self._batch(self._labels[index])
            self.params, self._opt_state, loss = self._step(self.params, self._opt_state, ids, labels, sub)
            self.losses.append(float(loss))

    def fit(self, rows: Sequence[Sequence[int]], labels: np.ndarray) -> list[float]:
        """Runs ``settings.steps`` steps over shuffled epochs of the rows; returns the loss per step."""
        self.start(rows, labels)
        self.advance(self.settings.steps)
        return self.losses

    def fit_selected(
        self, rows: Sequence[Sequence[int]], labels: np.ndarray, dev_score: Callable[[], float]
    ) -> selection.Selection:
        """Trains like ``fit``, scoring ``dev_score()`` every ``settings.eval_every`` steps; leaves the
        dev-best parameters in place (so ``predict`` uses them) and returns the selection."""
        self.start(rows, labels)
        chosen = selection.train_with_selection(
            self.advance,
            dev_score,
            lambda: jax.tree.map(jnp.copy, self.params),  # the step donates its input: keep a copy
            self.settings.steps,
            self.settings.eval_every,
        )
        self.params = chosen.snapshot
        return chosen

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
            out.append(np.asarray(self._logits(self.params, self._batch(chunk), None))[:real])
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


def scores(
    tuner: FineTuner, examples: Sequence[Example], tokenizer: Tokenizer, names: Sequence[str]
) -> dict[str, float]:
    """``accuracy`` (and ``f1`` over BIO spans when the tag set has spans) of the tuner on ``examples``."""
    label_ids = {name: i for i, name in enumerate(names)}
    rows, gold = featurize(examples, tokenizer, tuner.kind, label_ids, tuner.length)
    pred = tuner.predict(rows)
    if tuner.kind == "classification":
        return {"accuracy": float((pred == gold).mean())}
    valid = gold >= 0
    out = {"accuracy": float((pred[valid] == gold[valid]).mean()) if valid.any() else 0.0}
    if has_spans(names):
        gold_tags = [[names[g] for g in row[row >= 0]] for row in gold]
        pred_tags = [[names[p] for p in pr[row >= 0]] for pr, row in zip(pred, gold, strict=True)]
        out["f1"] = span_f1(gold_tags, pred_tags)
    return out


def has_spans(names: Sequence[str]) -> bool:
    return any(n.startswith(("B-", "I-")) for n in names)


def zero_shot_eval(
    encoder: Encoder,
    tokenizer: Tokenizer,
    kind: str,
    train: Sequence[Example],
    tests: Mapping[str, Sequence[Example]],
    settings: FinetuneSettings,
    dev: Sequence[Example] = (),
) -> tuple[list[Row], list[float]]:
    """Fine-tunes on ``train`` (English), evaluates on every language in ``tests``: (rows, training losses).

    With ``dev`` (English), the parameters scored on the tests are those of the step with the best dev score
    (span F1 for BIO tags, else accuracy), and the rows say which: ``(en, dev_<metric>)``, ``(en, best_step)``.
    Without it the last step is scored. ``(all, <metric>)`` rows are the means over the test languages."""
    names = sorted({ex.label for ex in train} if kind == "classification" else {t for ex in train for t in ex.tags})
    if len(names) < 2:
        raise ValueError(f"{kind} training data has fewer than 2 distinct labels: {names}")
    label_ids = {name: i for i, name in enumerate(names)}
    length = min(settings.max_length, encoder.config.max_length)
    tuner = FineTuner(encoder, kind, len(names), settings)
    rows, labels = featurize(train, tokenizer, kind, label_ids, length)
    results: list[Row] = []
    if dev:
        metric = "f1" if kind == "tagging" and has_spans(names) else "accuracy"
        chosen = tuner.fit_selected(rows, labels, lambda: scores(tuner, dev, tokenizer, names)[metric])
        results += [("en", f"dev_{metric}", chosen.dev_score), ("en", "best_step", float(chosen.step))]
    else:
        tuner.fit(rows, labels)
    losses = tuner.losses
    results += [("en", "train_loss_first", losses[0]), ("en", "train_loss_last", losses[-1])]
    per_metric: dict[str, list[float]] = {}
    for lang, examples in tests.items():
        for metric, value in scores(tuner, examples, tokenizer, names).items():
            results.append((lang, metric, value))
            per_metric.setdefault(metric, []).append(value)
        results.append((lang, "examples", float(len(examples))))
    results += [("all", metric, float(np.mean(values))) for metric, values in per_metric.items()]
    return results, losses
