"""The inference encoder: one model's tokenisation into padded batches and its jitted forward passes.

``load_pretrained`` returns one (with its tokenizer and run config) and the evals build one per checkpoint.
Batches are padded to a fixed number of rows and to power-of-two length buckets, and the jitted programs
are cached per config, so a long list of sentences (or a sweep's checkpoints) compiles only a handful of
programs whatever the sentence lengths are.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from xlmp_jax.model.model_config import ModelConfig
from xlmp_jax.model.vocab_padding import pad_vocab
from xlmp_jax.model.xlmp import XLMP, check_inputs


class Tokenizer(Protocol):
    """What the encoder and the evals need of the vocabulary (``data_pipelines.vocab.XLMRVocabulary``)."""

    pad_id: int
    bos_id: int
    eos_id: int

    def encode(self, text: str) -> list[int]: ...


def unwrap_params(params: Any) -> dict:
    """Accepts either the ``params`` collection or a ``{"params": ...}`` variables dict."""
    if isinstance(params, dict) and set(params) == {"params"}:
        return params["params"]
    return params


def default_layer(config: ModelConfig) -> int:
    """The layer pooled by default: the middle one, ``num_layers // 2`` (6 of XLM-R base's 12).

    Our choice: middle layers are the most language-neutral. XTREME's own retrieval layer is ``xtreme_layer``.
    """
    return config.num_layers // 2


XTREME_LAYERS = {12: 8, 24: 14}  # encoder depth -> the hidden state XTREME's retrieval scripts mean-pool


def xtreme_layer(num_layers: int) -> int:
    """The hidden state XTREME's Tatoeba/BUCC scripts mean-pool: 8 of 12 (base), 14 of 24 (large).

    Their ``--specific_layer`` indexes the layer outputs without the embeddings (7 for base, 13 for large in
    ``run_tatoeba.sh``), so it is layer output 8 / 14 here (0 = embeddings). Other depths: our extrapolation,
    two thirds of the way up (``2 * num_layers // 3``).
    """
    return XTREME_LAYERS.get(num_layers, 2 * num_layers // 3)


def resolve_layer(layer: int | str, num_layers: int) -> int:
    """Hidden-state index: 0 = embedding output, i = output of layer i (negative counts from the last);
    'middle' = num_layers // 2 (``default_layer``), 'xtreme' = ``xtreme_layer``, 'last' = num_layers."""
    given = layer
    if isinstance(layer, str):
        text = layer.strip().lower()
        if text in ("middle", ""):
            return num_layers // 2
        if text == "last":
            return num_layers
        if text == "xtreme":
            return xtreme_layer(num_layers)
        try:
            layer = int(text)
        except ValueError:
            raise ValueError(f"layer {layer!r} is not 'middle', 'xtreme', 'last' or an integer") from None
    if not -(num_layers + 1) <= layer <= num_layers:
        raise ValueError(f"layer={given!r} is outside [0, {num_layers}] (0 = embeddings, {num_layers} = last layer)")
    return layer % (num_layers + 1)


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
    """``<s> text </s>`` in at most ``max_length`` ids (``</s>`` kept when the text is cut)."""
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


@functools.lru_cache(maxsize=16)
def _logits_fn(config: ModelConfig):
    """Jitted logits, one per config: models of one config (e.g. a sweep's checkpoints) share the program."""

    def fn(params, ids, mask):
        logits = XLMP(config).apply({"params": params}, ids, mask, deterministic=True)["logits"]
        return logits[..., : config.vocab_size].astype(jnp.float32)  # the vocabulary padding cut off

    return jax.jit(fn)


@functools.lru_cache(maxsize=16)
def _pooled_fn(config: ModelConfig):
    """Jitted mean-pooled hidden states of every layer (``layers`` [L + 1, B, D]) and, with a pool, its
    ``query`` and ``weights``; one per config. Any layer is then a host-side pick, with no recompilation."""

    def fn(params, ids, mask):
        out = XLMP(config).apply(
            {"params": params}, ids, mask, deterministic=True, compute_logits=False, output_hidden_states=True
        )
        weights = mask.astype(jnp.float32)[..., None]
        count = jnp.maximum(weights.sum(axis=1), 1.0)
        layers = [(h.astype(jnp.float32) * weights).sum(axis=1) / count for h in out["all_hidden_states"]]
        result = {"layers": jnp.stack(layers)}
        if "pool" in out:
            result["weights"] = out["pool"]["weights"]
            result["query"] = out["pool"]["query"]
        return result

    return jax.jit(fn)


@dataclasses.dataclass(eq=False)
class Encoder:
    """A model config and its params (on device), with the jitted forward passes inference needs.

    ``tokenizer`` (an XLMRVocabulary) serves ``tokenize`` / ``encode``; ``run_config`` and ``step`` say which
    training run and step the params come from (None for an export directory or a bare params tree).
    """

    config: ModelConfig
    params: Any
    batch_size: int = 32
    max_length: int = 128
    tokenizer: Any = None
    run_config: Any = None
    step: int | None = None

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

    def _rows(self, n: int) -> int:
        """Rows per batch: ``batch_size``, or the next power of two >= n when fewer rows are given."""
        return min(self.batch_size, bucket_length(n, self.batch_size, minimum=1))

    def _padded(
        self, rows: Sequence[Sequence[int]], masks: Sequence[Sequence[int]] | None, limit: int
    ) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
        """(input_ids, attention_mask, number of real rows) per padded batch; the mask is ids != pad unless
        ``masks`` gives the real rows' own. Fixed rows and bucketed lengths keep the compiled shapes few."""
        size = self._rows(len(rows))
        pad = self.config.pad_token_id
        for start in range(0, len(rows), size):
            chunk = rows[start : start + size]
            length = bucket_length(max(len(r) for r in chunk), limit)
            ids = pad_rows(chunk, length, pad, size)
            mask = (ids != pad).astype(np.int32)
            if masks is not None:
                mask[: len(chunk)] = pad_rows(masks[start : start + size], length, 0)
            yield ids, mask, len(chunk)

    def batches(self, rows: Sequence[Sequence[int]]) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
        """(input_ids, attention_mask, number of real rows) per padded batch; rows cut at ``max_length``."""
        return self._padded(rows, None, self.max_length)

    def embed_ids(self, rows: Sequence[Sequence[int]], layer: int | str = "middle") -> dict[str, np.ndarray]:
        """Per sentence: ``embedding`` (mean-pooled hidden states of ``layer`` over non-pad tokens),
        ``query`` (the pool's query, or its baseline equivalent: the mean-pooled embedding-layer output)
        and, with a pool, ``weights`` [N, M]. Rows are batched longest first, so similar lengths share a batch."""
        index = resolve_layer(layer, self.config.num_layers)
        if not len(rows):
            raise ValueError("no sentences to embed")
        order = np.argsort([-len(r) for r in rows], kind="stable")
        parts: dict[str, list[np.ndarray]] = {}
        for ids, mask, real in self.batches([rows[i] for i in order]):
            out = jax.device_get(_pooled_fn(self.config)(self.params, ids, mask))
            layers = np.asarray(out.pop("layers"))
            out = {"embedding": layers[index], "query": layers[0], **out}  # a pool's own query replaces layer 0
            for key, value in out.items():
                parts.setdefault(key, []).append(np.asarray(value)[:real])
        result = {}
        for key, value in parts.items():
            result[key] = np.empty_like(np.concatenate(value))
            result[key][order] = np.concatenate(value)
        return result

    def embed_texts(
        self, tokenizer: Tokenizer, texts: Sequence[str], layer: int | str = "middle"
    ) -> dict[str, np.ndarray]:
        return self.embed_ids([encode_text(tokenizer, t, self.max_length) for t in texts], layer)

    def tokenize(self, sentences: Sequence[str], max_length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``<s> ... </s>`` ids [N, T] (padded with pad_id to the longest) and the attention mask [N, T].

        Sentences longer than ``max_length`` (default: the encoder's) are cut, keeping ``</s>``.
        """
        tokenizer = self._own_tokenizer()
        rows = [encode_text(tokenizer, s, max_length or self.max_length) for s in sentences]
        ids = pad_rows(rows, max((len(r) for r in rows), default=0), tokenizer.pad_id)
        return ids, (ids != tokenizer.pad_id).astype(np.int32)

    def logits(self, input_ids: Any, attention_mask: Any = None) -> np.ndarray:
        """Masked-LM logits [B, T, V] (fp32 NumPy) for the input's own tokens (prompt positions dropped)."""
        ids = np.asarray(input_ids, np.int32)
        check_inputs(self.config, ids)
        mask = (ids != self.config.pad_token_id) if attention_mask is None else np.asarray(attention_mask)
        if mask.shape != ids.shape:
            raise ValueError(f"attention_mask shape {mask.shape} differs from input_ids shape {ids.shape}")
        length = ids.shape[1]
        outputs = [
            np.asarray(_logits_fn(self.config)(self.params, chunk, chunk_mask))[:real, :length]
            for chunk, chunk_mask, real in self._padded(ids, mask.astype(np.int32), self.config.max_length)
        ]
        return np.concatenate(outputs, axis=0)

    def encode(self, sentences: Sequence[str], layer: int | str | None = None) -> np.ndarray:
        """One embedding per sentence [N, D] (fp32 NumPy): hidden states of ``layer`` averaged over its tokens.

        ``layer``: 0 = embedding output, i = output of encoder layer i (negative counts from the last);
        default ``default_layer(config)``. The average covers every non-pad token, ``<s>`` and ``</s>``
        included, and never the prompt positions.
        """
        layer = "middle" if layer is None else layer
        resolve_layer(layer, self.config.num_layers)  # a bad layer is refused before any tokenisation
        if not len(sentences):
            return np.zeros((0, self.config.hidden_size), np.float32)
        return self.embed_texts(self._own_tokenizer(), sentences, layer)["embedding"]

    def _own_tokenizer(self) -> Tokenizer:
        if self.tokenizer is None:
            raise ValueError("this Encoder has no tokenizer: pass tokenizer=... (e.g. an XLMRVocabulary)")
        return self.tokenizer
