"""The padded vocabulary: the rows and logit columns past ``vocab_size``.

The word embeddings and the decoder bias have ``padded_vocab_size`` rows (``vocab_size`` rounded up to
``vocab_multiple``) so that the ``vocab`` axis splits evenly over a tensor-parallel mesh axis; the padding
rows start at zero (``vocab_rows_init``), are never looked up (ids are checked against ``vocab_size``) and
their logits are masked to the lowest value (``vocab_mask``). Conversions to and from transformers strip
and re-add them (``convert``, ``pad_vocab``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from xlmp_jax.model.model_config import ModelConfig

# (module, param) of the parameters with one row per vocabulary entry: padded to ``padded_vocab_size``.
VOCAB_PARAMS = (("embeddings", "word_embeddings"), ("lm_head", "bias"))


def zero_rows_to(x: Any, rows: int) -> Any:
    """``x`` with zero rows appended along its first axis up to ``rows``; NumPy stays NumPy, JAX stays JAX."""
    xp = np if isinstance(x, np.ndarray) else jnp
    return xp.pad(x, [(0, rows - x.shape[0])] + [(0, 0)] * (x.ndim - 1))


def vocab_rows_init(vocab_size: int, init: Any, axes: tuple[str | None, ...]):
    """``init`` for the ``vocab_size`` real rows, zeros for the padding rows below them.

    The real rows get exactly the values of an unpadded table from the same key, and the padding rows
    hold what an import adds (zeros), so a fresh model and an imported one agree on them.
    """

    def padded(key, shape, dtype=jnp.float32):
        real = init(key, (vocab_size, *shape[1:]), dtype)
        return zero_rows_to(real, shape[0])

    return nn.with_logical_partitioning(padded, axes)


def vocab_mask(logits: jax.Array, vocab_size: int) -> jax.Array:
    """``logits`` [..., padded V] with the columns from ``vocab_size`` on at the dtype's lowest value.

    Every consumer (loss, accuracy, argmax, softmax) then sees zero probability there, and the select
    passes no gradient to the padding rows. Finite, not -inf: ``0 * lowest`` is 0, ``0 * -inf`` is NaN.
    An elementwise compare with an iota, so a vocabulary-sharded array stays sharded.
    """
    if logits.shape[-1] == vocab_size:
        return logits
    column = jax.lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1)
    return jnp.where(column < vocab_size, logits, jnp.finfo(logits.dtype).min)


def pad_vocab(config: ModelConfig, params: Mapping[str, Any]) -> dict:
    """``params`` with the vocabulary rows (word embeddings, decoder bias) zero-padded to ``padded_vocab_size``.

    For trees with ``vocab_size`` rows (a transformers import, a checkpoint written before padding);
    already padded trees pass unchanged. Works on NumPy and JAX arrays; other leaves are untouched.
    """
    out = dict(params)
    for outer, name in VOCAB_PARAMS:
        if outer not in out or name not in out[outer]:
            continue
        value = out[outer][name]
        rows = value.shape[0]
        if rows == config.padded_vocab_size:
            continue
        if rows != config.vocab_size:
            raise ValueError(
                f"param {outer}/{name} has {rows} rows: neither model.vocab_size={config.vocab_size} nor "
                f"its padded size {config.padded_vocab_size} (model.vocab_multiple={config.vocab_multiple})"
            )
        out[outer] = {**out[outer], name: zero_rows_to(value, config.padded_vocab_size)}
    return out
