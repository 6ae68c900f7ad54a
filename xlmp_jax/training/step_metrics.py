"""The additive statistics a train/eval step returns, and the metrics it derives from them.

Per (micro-)batch: totals, per-language sums and pool usage sums, which add up over micro-batches, steps
and eval batches (``metrics.accumulate``); ``finalize`` turns them into ``loss``, ``mlm_accuracy``,
pool usage and pool losses, keeping the sums for aggregation. Only records: what is minimised is computed in
``losses`` (``pool_sums`` takes the pool terms ``losses.pool_terms`` returned).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import jax
import jax.numpy as jnp


def entropy(p: jax.Array) -> jax.Array:
    """Entropy (nats) of the distributions along the last axis, with 0 log 0 = 0."""
    return -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), axis=-1)


def batch_sums(terms: dict, batch: Mapping[str, jax.Array], outputs: dict, num_languages: int) -> dict[str, jax.Array]:
    """Additive statistics of one (micro-)batch: totals, per-language sums and pool usage sums."""
    w = batch["mlm_weights"]
    lang = batch["language"].astype(jnp.int32)
    seg = functools.partial(jax.ops.segment_sum, segment_ids=lang, num_segments=num_languages)
    row_nll = jnp.sum(terms["nll"] * w, axis=1)
    row_correct = jnp.sum(terms["correct"] * w, axis=1)
    row_count = jnp.sum(w, axis=1)
    sums = {
        "nll_sum": row_nll.sum(),
        "objective_sum": jnp.sum(terms["objective"] * w),
        "correct_sum": row_correct.sum(),
        "num_predictions": row_count.sum(),
        "lang_loss_sum": seg(row_nll),
        "lang_correct_sum": seg(row_correct),
        "lang_count": seg(row_count),
    }
    if "pool" in outputs:
        weights = outputs["pool"]["weights"].astype(jnp.float32)  # [B, M]
        real = (jnp.sum(batch["attention_mask"], axis=1) > 0).astype(jnp.float32)  # all-pad rows don't count
        weights = weights * real[:, None]
        sums.update(
            pool_examples=real.sum(),
            pool_weight_sum=weights.sum(axis=0),
            pool_entropy_sum=jnp.sum(entropy(weights) * real),
            pool_lang_weight_sum=seg(weights),
            lang_examples=seg(real),
        )
    return sums


def pool_sums(terms: Mapping[str, jax.Array], rows: jax.Array) -> dict[str, jax.Array]:
    """``pool_<term>_sum`` for each pool loss of ``losses.pool_terms``: the term (a mean over the (micro-)batch's
    ``rows`` real rows) times ``rows``, so that it adds up over micro-batches; ``finalize`` divides it back."""
    return {f"pool_{name}_sum": value * rows for name, value in terms.items()}


def finalize(sums: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """Turns additive sums into the logged metrics (the sums stay, for aggregation over steps)."""
    count = jnp.maximum(sums["num_predictions"], 1.0)
    metrics = dict(sums)
    metrics["loss"] = sums["nll_sum"] / count
    metrics["objective"] = sums["objective_sum"] / count
    metrics["mlm_accuracy"] = sums["correct_sum"] / count
    if "pool_weight_sum" in sums:
        usage = sums["pool_weight_sum"] / jnp.maximum(sums["pool_examples"], 1.0)
        metrics["pool_usage"] = usage  # [M] mean retrieval weight of each prompt
        metrics["pool_usage_entropy"] = entropy(usage)  # high = many prompts in use
        metrics["pool_example_entropy"] = sums["pool_entropy_sum"] / jnp.maximum(sums["pool_examples"], 1.0)
        metrics["pool_lang_weights"] = sums["pool_lang_weight_sum"] / jnp.maximum(sums["lang_examples"], 1.0)[:, None]
    for name in ("key_loss", "diversity_loss"):
        if f"pool_{name}_sum" in sums:
            metrics[f"pool_{name}"] = sums[f"pool_{name}_sum"] / jnp.maximum(sums["pool_examples"], 1.0)
    return metrics
