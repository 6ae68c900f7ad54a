"""How a step reshapes its batch: the K selected positions and the micro-batches.

The batch format is data_pipelines/README.md's (``data_pipelines.batch_format``, which also makes the filler
rows: pad ids, no tokens, no predictions).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
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
