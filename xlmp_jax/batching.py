"""How a step reshapes its batch: the K selected positions, micro-batches, and filler rows.

The batch format is data_pipelines/README.md's; a filler row has pad ids, no tokens and no predictions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding


def gather_predictions(
    batch: Mapping[str, jax.Array], num_predictions: int, sharding: NamedSharding | None = None
) -> dict[str, jax.Array]:
    """The batch with ``mlm_positions`` / ``mlm_targets`` / ``mlm_weights`` [B, K] in place of [B, T] ones.

    ``sharding`` (the batch sharding) pins the gathered arrays to the rows' layout.
    """
    k = min(num_predictions, batch["weights"].shape[1])
    weights, positions = jax.lax.top_k(batch["weights"].astype(jnp.float32), k)
    out = {name: value for name, value in batch.items() if name not in ("targets", "weights")}
    out["mlm_positions"] = positions.astype(jnp.int32)
    out["mlm_targets"] = jnp.take_along_axis(batch["targets"], positions, axis=1)
    out["mlm_weights"] = weights
    if sharding is not None:
        for name in ("mlm_positions", "mlm_targets", "mlm_weights"):
            out[name] = jax.lax.with_sharding_constraint(out[name], sharding)
    return out


def micro_batches(batch: dict[str, jax.Array], steps: int) -> dict[str, jax.Array]:
    """[B, ...] -> [steps, B / steps, ...]; micro-batch i takes rows i, i + steps, ... so that every
    data-parallel shard contributes equally to each micro-batch (no cross-device reshuffle)."""

    def split(x):
        x = x.reshape(x.shape[0] // steps, steps, *x.shape[1:])
        return jnp.swapaxes(x, 0, 1)

    return {name: split(value) for name, value in batch.items()}


def pad_rows(batch: Mapping[str, Any], rows: int, pad_id: int) -> dict[str, np.ndarray]:
    """A host batch (NumPy arrays) with filler rows appended up to ``rows``: ``pad_id`` in ``input_ids`` and
    ``positions``, zeros elsewhere, so they carry no tokens and no predictions."""
    out = {name: np.asarray(value) for name, value in batch.items()}
    extra = rows - len(next(iter(out.values())))
    if not extra:
        return out
    fill = {"input_ids": pad_id, "positions": pad_id}
    return {
        name: np.concatenate([value, np.full((extra, *value.shape[1:]), fill.get(name, 0), value.dtype)])
        for name, value in out.items()
    }
