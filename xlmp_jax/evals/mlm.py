"""Per-language masked-LM loss and accuracy on held-out text.

Batches are in the data pipeline's batch format (data_pipelines/README.md, "Batch format": ``input_ids``,
``attention_mask``, ``positions``, ``targets``, ``weights``, ``language``): by default they come from ``data_pipelines.eval_data.make_eval_data`` on the
checkpoint's own data config; ``sample_mlm_batches`` builds equivalent deterministic batches straight from
the shipped sample's validation lines (every selected token replaced by ``<mask>``: our choice for eval).

The model sees the masked ``input_ids`` only, so the pool's query is built from the masked input, as in
training: a query from the clean ids would carry the masked tokens to the head through the routing weights.
With a pool, the eval also reports how far each sentence's routing moves between its masked form and its
clean form (the selected positions restored from ``targets``): ``routing_tv``, ``routing_jsd`` (bits) and
``routing_top_changed`` (fraction of sentences whose top prompt changes), per language and ``all``.

The sweep's ``mlm`` eval: ``run`` with the settings block ``config()``.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from data_pipelines.eval_data import make_eval_data
from xlmp_jax.evals.context import EvalContext, Row, split_list
from xlmp_jax.evals.heldout import sample_languages, transfer_dev_languages, transfer_dev_texts, validation_texts
from xlmp_jax.hf.encoder import Encoder, Tokenizer, bucket_length, encode_text
from xlmp_jax.model.prompt_pool import routing_shift
from xlmp_jax.training.losses import mlm_loss

NAME = "mlm"
SHIFT_METRICS = ("tv", "jsd", "top_changed")  # reported as routing_<name>


@functools.partial(jax.jit, static_argnums=(0, 7))
def _mlm_sums(model, params, input_ids, attention_mask, positions, targets, weights, num_predictions: int):
    """Per-row sums of loss, correct predictions and weight over the K highest-weight positions."""
    top_w, top_i = jax.lax.top_k(weights, num_predictions)
    out = model.apply({"params": params}, input_ids, attention_mask, positions, mlm_positions=top_i, deterministic=True)
    labels = jnp.take_along_axis(targets, top_i, axis=1)
    terms = mlm_loss(out["logits"], labels, top_w, vocab_size=model.config.vocab_size)  # the train step's loss
    nll, correct = terms["nll"], terms["correct"]
    selected = top_w > 0  # where(), not a product: an all-padding filler row may hold NaNs
    loss = jnp.where(selected, nll * top_w, 0.0).sum(axis=1)
    return loss, jnp.where(selected, correct * top_w, 0.0).sum(axis=1), top_w.sum(axis=1)


def clean_input_ids(input_ids: np.ndarray, targets: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The unmasked ids: the original token (``targets``) restored wherever a prediction is selected."""
    return np.where(np.asarray(weights) > 0, np.asarray(targets), np.asarray(input_ids)).astype(np.int32)


@functools.partial(jax.jit, static_argnums=(0,))
def _routing_shift(model, params, masked_ids, clean_ids, attention_mask, positions) -> dict[str, jax.Array]:
    """Per row: ``routing_shift`` between the routing of the masked and of the clean ids."""
    masked = model.apply({"params": params}, masked_ids, attention_mask, positions, method="route")
    clean = model.apply({"params": params}, clean_ids, attention_mask, positions, method="route")
    return routing_shift(masked["weights"], clean["weights"])


def masked_clean_shift(encoder: Encoder, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per row of an MLM batch (``input_ids`` masked, ``targets``/``weights`` as in the data pipeline's batch format): how far
    the pool's routing of the masked input is from that of the clean input (``routing_shift``'s measures)."""
    positions = batch.get("positions")
    out = _routing_shift(
        encoder.model,
        encoder.params,
        np.asarray(batch["input_ids"], np.int32),
        clean_input_ids(batch["input_ids"], batch["targets"], batch["weights"]),
        np.asarray(batch["attention_mask"], np.int32),
        None if positions is None else np.asarray(positions, np.int32),
    )
    return {k: np.asarray(v, np.float64) for k, v in jax.device_get(out).items()}


def _shift_rows(sums: np.ndarray, rows: np.ndarray, languages: Sequence[str]) -> list[Row]:
    """``routing_<metric>`` means per language and over all sentences from per-language sums [L, 3]."""
    out: list[Row] = []
    for i, lang in enumerate(languages):
        if rows[i] > 0:
            out += [(lang, f"routing_{m}", sums[i, j] / rows[i]) for j, m in enumerate(SHIFT_METRICS)]
    if rows.sum() > 0:
        out += [("all", f"routing_{m}", sums[:, j].sum() / rows.sum()) for j, m in enumerate(SHIFT_METRICS)]
    return out


def mlm_eval(encoder: Encoder, batches: Iterable[Mapping[str, np.ndarray]], languages: Sequence[str]) -> list[Row]:
    """Rows (language, loss|accuracy|predictions, value) per language, plus language ``all`` (token-weighted);
    with a pool also ``routing_tv|routing_jsd|routing_top_changed`` (masked vs clean, sentence-weighted)."""
    loss = np.zeros(len(languages))
    correct = np.zeros(len(languages))
    count = np.zeros(len(languages))
    shift = np.zeros((len(languages), len(SHIFT_METRICS)))
    shift_rows = np.zeros(len(languages))
    for batch in batches:
        weights = np.asarray(batch["weights"], np.float32)
        k = bucket_length(int((weights > 0).sum(axis=1).max(initial=1)), weights.shape[1], minimum=8)
        positions = batch.get("positions")
        sums = _mlm_sums(
            encoder.model,
            encoder.params,
            np.asarray(batch["input_ids"], np.int32),
            np.asarray(batch["attention_mask"], np.int32),
            None if positions is None else np.asarray(positions, np.int32),
            np.asarray(batch["targets"], np.int32),
            weights,
            k,
        )
        row_loss, row_correct, row_count = (np.asarray(x, np.float64) for x in jax.device_get(sums))
        language = np.asarray(batch["language"])
        np.add.at(loss, language, row_loss)
        np.add.at(correct, language, row_correct)
        np.add.at(count, language, row_count)
        if encoder.has_pool:
            per_row = masked_clean_shift(encoder, batch)
            scored = row_count > 0  # sentences with a prediction; filler rows have none
            values = np.stack([per_row[m] for m in SHIFT_METRICS], axis=1)
            np.add.at(shift, language[scored], values[scored])
            np.add.at(shift_rows, language[scored], 1.0)
    rows: list[Row] = []
    for i, lang in enumerate(languages):
        if count[i] > 0:
            rows += [(lang, "loss", loss[i] / count[i]), (lang, "accuracy", correct[i] / count[i])]
            rows.append((lang, "predictions", float(count[i])))
    if count.sum() == 0:
        raise ValueError(f"no masked positions in the eval batches for languages {list(languages)}")
    total = count.sum()
    rows += [("all", "loss", loss.sum() / total), ("all", "accuracy", correct.sum() / total)]
    return rows + _shift_rows(shift, shift_rows, languages)


def mask_row(
    ids: Sequence[int], rng: np.random.Generator, mlm_rate: float, mask_id: int, special: set[int]
) -> tuple[list[int], list[int], list[float]]:
    """Masks ceil(n * rate) of the n non-special tokens (at least one): (input ids, targets, weights)."""
    candidates = [i for i, t in enumerate(ids) if t not in special]
    chosen = set()
    if candidates:
        chosen = set(rng.choice(candidates, size=max(1, math.ceil(len(candidates) * mlm_rate)), replace=False).tolist())
    inputs = [mask_id if i in chosen else t for i, t in enumerate(ids)]
    targets = [t if i in chosen else 0 for i, t in enumerate(ids)]
    weights = [1.0 if i in chosen else 0.0 for i in range(len(ids))]
    return inputs, targets, weights


def sample_mlm_batches(
    tokenizer: Tokenizer,
    texts_by_language: Mapping[str, Sequence[str]],
    *,
    seq_length: int,
    mlm_rate: float,
    mask_id: int,
    batch_size: int,
    seed: int = 0,
    max_batches: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """Deterministic MLM batches (the data pipeline's batch format, data_pipelines/README.md) from raw lines, one language after the other."""
    special = {tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id}
    for index, texts in enumerate(texts_by_language.values()):
        rng = np.random.default_rng([seed, index])
        if max_batches:
            texts = texts[: max_batches * batch_size]
        rows = [mask_row(encode_text(tokenizer, t, seq_length), rng, mlm_rate, mask_id, special) for t in texts]
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            batch = {
                "input_ids": np.full((len(chunk), seq_length), tokenizer.pad_id, np.int32),
                "targets": np.zeros((len(chunk), seq_length), np.int32),
                "weights": np.zeros((len(chunk), seq_length), np.float32),
            }
            for i, (inputs, targets, weights) in enumerate(chunk):
                batch["input_ids"][i, : len(inputs)] = inputs
                batch["targets"][i, : len(targets)] = targets
                batch["weights"][i, : len(weights)] = weights
            batch["attention_mask"] = (batch["input_ids"] != tokenizer.pad_id).astype(np.int32)
            not_pad = batch["attention_mask"]
            batch["positions"] = (np.cumsum(not_pad, axis=1) * not_pad + tokenizer.pad_id).astype(np.int32)
            batch["language"] = np.full((len(chunk),), index, np.int32)
            yield batch


def config() -> ml_collections.ConfigDict:
    """The sweep config's ``mlm`` block."""
    return ml_collections.ConfigDict(
        dict(
            # pipeline (make_eval_data on the checkpoint's data config) | sample (validation lines) |
            # transfer_dev (the transfer task's dev strings: a dev set disjoint from the validation lines)
            source="pipeline",
            languages="",  # '' = the data config's languages (every sample language by default)
            batch_size=16,
            max_batches=8,  # batches per language; 0 = the whole validation split
        )
    )


SOURCES = ("pipeline", "sample", "transfer_dev")


def check(block: ml_collections.ConfigDict, name: str) -> None:
    """Refuses an unknown ``source`` before the sweep reads any checkpoint."""
    if block.get("source", "pipeline") not in SOURCES:
        raise ValueError(f"{name}.source={block.source!r} is not one of {SOURCES}")


def run(ctx: EvalContext, cfg: ml_collections.ConfigDict) -> list[Row]:
    """Per-language MLM rows of one checkpoint on the data config's eval batches or the sample's lines."""
    data_cfg = ctx.run_config.data
    languages = split_list(cfg.languages) or split_list(data_cfg.get("languages", ()))
    limit = cfg.max_batches or None
    if cfg.source == "pipeline":  # batches' `language` indexes the data config's full language list
        if not languages:  # every language of the data config's source
            languages = list(make_eval_data(data_cfg, batch_size=cfg.batch_size).languages)
        parts = [make_eval_data(data_cfg, batch_size=cfg.batch_size, languages=[lang]) for lang in languages]
        batches = itertools.chain.from_iterable(itertools.islice(iter(p), limit) for p in parts)
        languages = list(parts[0].languages)
    elif cfg.source in ("sample", "transfer_dev"):
        if cfg.source == "sample":
            texts = validation_texts(languages or sample_languages(""), 0)
        else:
            # the requested languages, else those of the data config that have dev strings
            wanted = split_list(cfg.languages) or [
                x for x in transfer_dev_languages() if not languages or x in languages
            ]
            texts = transfer_dev_texts(wanted, 0)
        languages = list(texts)
        batches = sample_mlm_batches(
            ctx.tokenizer,
            texts,
            seq_length=int(data_cfg.get("seq_length", ctx.sweep.max_length)),
            mlm_rate=float(data_cfg.get("mlm_rate", 0.15)),
            mask_id=ctx.tokenizer.mask_id,
            batch_size=cfg.batch_size,
            seed=ctx.sweep.seed,
            max_batches=limit,
        )
    else:
        raise ValueError(f"mlm.source={cfg.source!r} is not 'pipeline', 'sample' or 'transfer_dev'")
    return mlm_eval(ctx.encoder, batches, languages)
