"""One checkpoint's model as the evals see it: tokenisation into padded batches and jitted forward passes.

Batches are padded to a fixed batch size and to power-of-two length buckets, so a whole eval compiles
only a handful of programs whatever the sentence lengths are.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from xlmp_jax.model import XLMP
from xlmp_jax.model_config import ModelConfig
from xlmp_jax.vocab_padding import pad_vocab


class Tokenizer(Protocol):
    """What the evals need of ``data_pipelines.vocab.XLMRVocabulary`` (interface 1)."""

    pad_id: int
    bos_id: int
    eos_id: int

    def encode(self, text: str) -> list[int]: ...


def unwrap_params(params: Any) -> dict:
    """Accepts either the ``params`` collection or a ``{"params": ...}`` variables dict."""
    if isinstance(params, dict) and set(params) == {"params"}:
        return params["params"]
    return params


def resolve_layer(layer: int | str, num_layers: int) -> int:
    """Hidden-state index: 0 = embedding output, i = output of layer i; 'middle' = num_layers // 2.

    XTREME embeds Tatoeba/BUCC sentences with a middle layer of the encoder, hence the default.
    """
    if isinstance(layer, str):
        text = layer.strip().lower()
        if text in ("middle", ""):
            return num_layers // 2
        if text == "last":
            return num_layers
        try:
            layer = int(text)
        except ValueError:
            raise ValueError(f"layer {layer!r} is not 'middle', 'last' or an integer") from None
    if layer < 0:
        layer += num_layers + 1
    if not 0 <= layer <= num_layers:
        raise ValueError(f"layer {layer} is outside [0, {num_layers}] (0 = embeddings, {num_layers} = last layer)")
    return layer


def bucket_length(length: int, max_length: int, minimum: int = 16) -> int:
    """Smallest power of two >= length (at least ``minimum``), capped at ``max_length``."""
    bucket = minimum
    while bucket < length:
        bucket *= 2
    return min(bucket, max_length)


def with_specials(tokenizer: Tokenizer, ids: Sequence[int], max_length: int) -> list[int]:
    """``<s> ids </s>``, truncating the middle ids so the row fits ``max_length``."""
    return [tokenizer.bos_id, *list(ids)[: max_length - 2], tokenizer.eos_id]


def encode_text(tokenizer: Tokenizer, text: str, max_length: int) -> list[int]:
    return with_specials(tokenizer, tokenizer.encode(text), max_length)


def encode_pair(tokenizer: Tokenizer, first: str, second: str, max_length: int) -> list[int]:
    """XLM-R's sentence-pair layout ``<s> a </s></s> b </s>``; both sides truncated evenly to fit."""
    a, b = tokenizer.encode(first), tokenizer.encode(second)
    budget = max_length - 4
    while len(a) + len(b) > budget:
        if len(a) >= len(b):
            a = a[:-1]
        else:
            b = b[:-1]
    return [tokenizer.bos_id, *a, tokenizer.eos_id, tokenizer.eos_id, *b, tokenizer.eos_id]


def pad_rows(rows: Sequence[Sequence[int]], length: int, pad_id: int, batch_size: int | None = None) -> np.ndarray:
    """[len(rows) or batch_size, length] int32, padded with ``pad_id``. Filler rows are ``<s></s>``-like."""
    count = batch_size or len(rows)
    out = np.full((count, length), pad_id, np.int32)
    for i, row in enumerate(rows):
        row = list(row)[:length]
        out[i, : len(row)] = row
    for i in range(len(rows), count):  # a filler row with two real tokens, never an all-pad row
        out[i, :2] = (0, 2)
    return out


@dataclasses.dataclass(eq=False)  # hashed by identity: jit's static ``self``
class Encoder:
    """A model config and its params, with the jitted forward passes every eval uses."""

    config: ModelConfig
    params: Any
    batch_size: int = 32
    max_length: int = 128

    def __post_init__(self):
        # pad_vocab: a checkpoint written before vocabulary padding has vocab_size rows
        self.params = jax.device_put(pad_vocab(self.config, unwrap_params(self.params)))
        self.max_length = min(self.max_length, self.config.max_length)
        self.model = XLMP(self.config)

    @property
    def has_pool(self) -> bool:
        return self.config.pool is not None

    @property
    def model_type(self) -> str:
        return "xlmp" if self.has_pool else "baseline"

    @functools.partial(jax.jit, static_argnums=(0, 4))
    def _embed(self, params, input_ids, attention_mask, layer: int) -> dict[str, jax.Array]:
        out = self.model.apply(
            {"params": params}, input_ids, attention_mask, compute_logits=False, output_hidden_states=True
        )
        mask = attention_mask.astype(jnp.float32)[..., None]
        count = jnp.maximum(mask.sum(axis=1), 1.0)
        hidden = out["all_hidden_states"][layer].astype(jnp.float32)
        result = {"embedding": (hidden * mask).sum(axis=1) / count}
        if "pool" in out:
            result["weights"] = out["pool"]["weights"]
            result["query"] = out["pool"]["query"]
        else:  # the baseline's "query": the same mean-pooled embedding-layer output XLM-P's pool would use
            embedded = out["all_hidden_states"][0].astype(jnp.float32)
            result["query"] = (embedded * mask).sum(axis=1) / count
        return result

    def batches(self, rows: Sequence[Sequence[int]]) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
        """(input_ids, attention_mask, number of real rows) per fixed-size padded batch."""
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start : start + self.batch_size]
            length = bucket_length(max(len(r) for r in chunk), self.max_length)
            ids = pad_rows(chunk, length, self.config.pad_token_id, self.batch_size)
            yield ids, (ids != self.config.pad_token_id).astype(np.int32), len(chunk)

    def embed_ids(self, rows: Sequence[Sequence[int]], layer: int | str = "middle") -> dict[str, np.ndarray]:
        """Per sentence: ``embedding`` (mean-pooled hidden states of ``layer`` over non-pad tokens),
        ``query`` (the pool's query, or its baseline equivalent) and, with a pool, ``weights`` [N, M]."""
        index = resolve_layer(layer, self.config.num_layers)
        parts: dict[str, list[np.ndarray]] = {}
        for ids, mask, real in self.batches(rows):
            out = jax.device_get(self._embed(self.params, ids, mask, index))
            for key, value in out.items():
                parts.setdefault(key, []).append(np.asarray(value)[:real])
        if not parts:
            raise ValueError("no sentences to embed")
        return {key: np.concatenate(value) for key, value in parts.items()}

    def embed_texts(
        self, tokenizer: Tokenizer, texts: Sequence[str], layer: int | str = "middle"
    ) -> dict[str, np.ndarray]:
        return self.embed_ids([encode_text(tokenizer, t, self.max_length) for t in texts], layer)
