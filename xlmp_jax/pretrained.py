"""``load_pretrained``: a trained XLM-P (or baseline) ready for notebooks and evals.

    model = xlmp_jax.load_pretrained("workdirs/tiny")        # work dir (latest step), step dir or export dir
    ids, mask = model.tokenize(["Hello world.", "Hallo Welt."])
    logits = model.logits(ids, mask)                         # NumPy [2, T, vocab], input tokens only
    vectors = model.encode(["Hello world.", "Hallo Welt."])  # NumPy [2, hidden], mean-pooled middle layer

Inference is jitted and batched: inputs are cut into ``batch_size`` rows and padded to a few bucketed
lengths, so a long list of sentences compiles a handful of programs, not one per shape.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from xlmp_jax.model import XLMP, check_inputs
from xlmp_jax.model_config import ModelConfig
from xlmp_jax.vocab_padding import pad_vocab

_MIN_BUCKET = 16


def default_layer(config: ModelConfig) -> int:
    """The layer ``encode`` pools by default: the middle one, ``num_layers // 2`` (6 of XLM-R base's 12).

    Our choice: XTREME's retrieval tasks (Tatoeba/BUCC) use a middle layer of the encoder, where
    representations are the most language-neutral; the exact layer of the paper is unconfirmed offline.
    """
    return config.num_layers // 2


def _bucket(length: int, limit: int, smallest: int = _MIN_BUCKET) -> int:
    """The next power of two >= length (at least ``smallest``), capped at ``limit``: few compiled shapes."""
    size = smallest
    while size < length:
        size *= 2
    return min(size, max(limit, length))


@functools.lru_cache(maxsize=16)
def _logits_fn(config: ModelConfig):
    """Jitted logits, one per config: models of one config (e.g. a sweep's checkpoints) share the program."""

    def fn(params, ids, mask):
        logits = XLMP(config).apply({"params": params}, ids, mask, deterministic=True)["logits"]
        return logits[..., : config.vocab_size].astype(jnp.float32)  # the vocabulary padding cut off

    return jax.jit(fn)


@functools.lru_cache(maxsize=16)
def _encode_fn(config: ModelConfig):
    """Jitted mean-pooled hidden states of every layer [L + 1, B, D], one per config: any ``layer`` is
    then a host-side pick, with no recompilation (pooling as it goes keeps no layer's activations)."""

    def fn(params, ids, mask):
        out = XLMP(config).apply(
            {"params": params}, ids, mask, deterministic=True, compute_logits=False, output_hidden_states=True
        )
        weights = mask.astype(jnp.float32)[..., None]
        count = jnp.maximum(weights.sum(axis=1), 1.0)
        return jnp.stack([(h.astype(jnp.float32) * weights).sum(axis=1) / count for h in out["all_hidden_states"]])

    return jax.jit(fn)


@dataclasses.dataclass
class Pretrained:
    """A loaded model: ``config`` (ModelConfig), ``params`` (NumPy tree), ``tokenizer`` (XLMRVocabulary).

    ``run_config`` is the training run's ConfigDict (None for an export directory), ``step`` its step.
    """

    config: ModelConfig
    params: dict
    tokenizer: Any
    run_config: Any = None
    step: int | None = None
    batch_size: int = 32

    def __post_init__(self):
        self._device_params = None

    def _params_on_device(self):
        if self._device_params is None:
            self._device_params = jax.device_put(self.params)
        return self._device_params

    def _run(self, fn, ids: np.ndarray, mask: np.ndarray, rows: int, batch_axis: int = 0) -> list[np.ndarray]:
        """``fn`` over ``rows``-row batches padded to a bucketed length; one output per batch, pads cut off.

        Fixed batch rows and power-of-two lengths keep the number of compiled shapes small.
        """
        n, length = ids.shape
        padded_len = _bucket(length, self.config.max_length)
        params = self._params_on_device()
        outputs = []
        for start in range(0, n, rows):
            count = min(rows, n - start)
            chunk_ids = np.full((rows, padded_len), self.config.pad_token_id, np.int32)
            chunk_mask = np.zeros((rows, padded_len), np.int32)
            chunk_ids[:count, :length] = ids[start : start + count]
            chunk_mask[:count, :length] = mask[start : start + count]
            out = np.asarray(fn(params, chunk_ids, chunk_mask))
            outputs.append(np.take(out, np.arange(count), axis=batch_axis))
        return outputs

    def _rows(self, n: int) -> int:
        return min(self.batch_size, _bucket(n, self.batch_size, smallest=1))

    def tokenize(self, sentences: Sequence[str], max_length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``<s> ... </s>`` ids [N, T] (padded with pad_id to the longest) and the attention mask [N, T].

        Sentences longer than ``max_length`` (default: the position table's limit) are cut, keeping ``</s>``.
        """
        limit = max_length or self.config.max_length
        rows = []
        for sentence in sentences:
            ids = self.tokenizer.encode_with_specials(sentence)
            if len(ids) > limit:
                ids = ids[: limit - 1] + [self.tokenizer.eos_id]
            rows.append(ids)
        length = max((len(r) for r in rows), default=0)
        ids = np.full((len(rows), length), self.tokenizer.pad_id, np.int32)
        mask = np.zeros((len(rows), length), np.int32)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        return ids, mask

    def logits(self, input_ids: Any, attention_mask: Any = None) -> np.ndarray:
        """Masked-LM logits [B, T, V] (fp32 NumPy) for the input's own tokens (prompt positions dropped)."""
        ids = np.asarray(input_ids, np.int32)
        check_inputs(self.config, ids)
        mask = (ids != self.config.pad_token_id) if attention_mask is None else np.asarray(attention_mask)
        if mask.shape != ids.shape:
            raise ValueError(f"attention_mask shape {mask.shape} differs from input_ids shape {ids.shape}")
        outputs = self._run(_logits_fn(self.config), ids, mask.astype(np.int32), self._rows(len(ids)))
        return np.concatenate([out[:, : ids.shape[1]] for out in outputs], axis=0)

    def encode(self, sentences: Sequence[str], layer: int | None = None) -> np.ndarray:
        """One embedding per sentence [N, D] (fp32 NumPy): hidden states of ``layer`` averaged over its tokens.

        ``layer``: 0 = embedding output, i = output of encoder layer i (negative counts from the last);
        default ``default_layer(config)``. The average covers every non-pad token, ``<s>`` and ``</s>``
        included, and never the prompt positions.
        """
        layer = default_layer(self.config) if layer is None else layer
        num = self.config.num_layers
        if not -(num + 1) <= layer <= num:
            raise ValueError(f"layer={layer} is outside [0, {num}] (0 = embeddings, {num} = last layer)")
        layer %= num + 1
        if not len(sentences):
            return np.zeros((0, self.config.hidden_size), np.float32)
        ids, mask = self.tokenize(sentences)
        order = np.argsort(-mask.sum(axis=1), kind="stable")  # similar lengths share a padded batch
        out = np.empty((len(sentences), self.config.hidden_size), np.float32)
        rows = self._rows(len(sentences))
        for start in range(0, len(order), rows):
            chunk = order[start : start + rows]
            length = int(mask[chunk].sum(axis=1).max())
            (pooled,) = self._run(_encode_fn(self.config), ids[chunk, :length], mask[chunk, :length], rows, 1)
            out[chunk] = pooled[layer]
        return out


def _is_export_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "config.json")) and os.path.isfile(os.path.join(path, "model.safetensors"))


def load_pretrained(
    path: str, step: int | None = None, *, dtype: str | None = None, batch_size: int = 32
) -> Pretrained:
    """Loads a work directory (latest step, or ``step``), a checkpoint step directory, or an export directory.

    ``dtype`` overrides the compute dtype (e.g. "float32" for exact CPU numbers after bf16 training).
    """
    from data_pipelines.vocab import XLMRVocabulary

    path = str(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no work directory, checkpoint or export at {path!r}")
    if _is_export_dir(path) and not os.path.isdir(os.path.join(path, "checkpoints")):
        from xlmp_jax import export

        config = export.read_exported_config(path)
        pool = None
        if config.pool is not None:
            pool = export.load_exported_pool(path, config.pool, config.hidden_size)
        params = export.load_hf_encoder(path, config, pool)
        vocab_path, run_config, loaded_step = os.path.join(path, export.SPM_FILE), None, None
    else:
        from xlmp_jax import checkpoint

        run_config, params, loaded_step = checkpoint.load_params(path, step)
        config = ModelConfig.from_dict(run_config.model)
        params = pad_vocab(config, params)  # a checkpoint written before vocabulary padding has vocab_size rows
        vocab_path = run_config.data.vocab_path
    if dtype is not None:
        config = dataclasses.replace(config, dtype=dtype)
    tokenizer = XLMRVocabulary(vocab_path)
    if tokenizer.vocab_size != config.vocab_size:
        raise ValueError(
            f"vocabulary {vocab_path!r} has {tokenizer.vocab_size} ids but model.vocab_size={config.vocab_size}"
        )
    return Pretrained(config, params, tokenizer, run_config, loaded_step, batch_size)
