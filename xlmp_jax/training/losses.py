"""What a step minimises: the masked-LM cross-entropy and the pool's optional training-only losses.

``mlm_loss`` is the one MLM loss: the train and eval steps and the MLM eval (``evals.mlm``) all use it.
``pool_terms`` are the pool's losses and ``pool_objective`` their weighted share of what is minimised; all of
them are pure (the step records the terms as metrics through ``step_metrics.pool_sums``).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

from xlmp_jax.model.prompt_pool import PoolConfig, diversity_loss, key_matching_loss
from xlmp_jax.model.vocab_padding import vocab_mask


def mlm_loss(
    logits: jax.Array,
    targets: jax.Array,
    weights: jax.Array,
    *,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    vocab_size: int | None = None,
) -> dict[str, jax.Array]:
    """Masked-LM cross-entropy in fp32 over ``logits`` [..., V] at the selected positions.

    Returns per-position arrays (shape of ``targets``), unweighted: ``nll`` (plain cross-entropy, what
    the logged loss and perplexity use), ``objective`` (``nll`` with label smoothing against the
    uniform distribution and ``z_loss * logsumexp**2`` if configured: what is minimised) and ``correct``
    (the target has the largest logit, as float); plus ``loss`` = the weighted mean of ``objective`` (a scalar).

    ``vocab_size`` < V marks the last columns as vocabulary padding: zero probability, never the max,
    outside the smoothing's uniform distribution. Every reduction over V is a max or a sum (the target
    logit too: an iota compare-and-sum, not a gather), so logits split over V (tensor parallel) stay
    split: each shard reduces its columns and only [...]-sized partial results cross devices.
    """
    logits = logits.astype(jnp.float32)
    weights = weights.astype(jnp.float32)
    num_columns = logits.shape[-1]
    vocab_size = num_columns if vocab_size is None else int(vocab_size)
    if not 0 < vocab_size <= num_columns:
        raise ValueError(f"vocab_size={vocab_size} must be in [1, logits' last dimension {num_columns}]")
    logits = vocab_mask(logits, vocab_size)
    column = jax.lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1)
    # One max pass serves both the stable log-sum-exp and the accuracy: an argmax over 250k logits is
    # a separate (index-carrying) reduction that cost 1-3 % of a CPU step. A hit is
    # ``target_logit >= max``, which differs from ``argmax == target`` only on exact ties.
    row_max = jax.lax.stop_gradient(jnp.max(logits, axis=-1))
    lse = row_max + jnp.log(jnp.sum(jnp.exp(logits - row_max[..., None]), axis=-1))
    is_target = column == targets[..., None].astype(jnp.int32)
    target_logit = jnp.sum(jnp.where(is_target, logits, 0.0), axis=-1)
    nll = lse - target_logit
    objective = nll
    if label_smoothing:
        # CE against (1 - s) * onehot + s / V over the real vocabulary: lse - (1 - s) * z_target - s * mean(z)
        real_sum = jnp.sum(jnp.where(column < vocab_size, logits, 0.0), axis=-1)
        objective = lse - (1.0 - label_smoothing) * target_logit - label_smoothing * real_sum / vocab_size
    if z_loss:
        objective = objective + z_loss * jnp.square(lse)
    correct = (target_logit >= row_max).astype(jnp.float32)
    loss = jnp.sum(objective * weights) / jnp.maximum(jnp.sum(weights), 1.0)
    return {"nll": nll, "objective": objective, "correct": correct, "loss": loss}


def real_rows(mask: jax.Array) -> jax.Array:
    """Number of rows of ``mask`` [B, T] with at least one real token: what the pool terms are means over
    (an all-padding filler row has no routing to score)."""
    return jnp.sum((jnp.sum(mask, axis=1) > 0).astype(jnp.float32))


def pool_terms(pool: PoolConfig, keys: jax.Array, pool_out: Mapping[str, jax.Array], mask: jax.Array) -> dict:
    """The enabled (weight > 0) training-only pool losses of one (micro-)batch, each a mean over real rows."""
    terms = {}
    if pool.key_loss_weight > 0:
        terms["key_loss"] = key_matching_loss(pool_out["query"], keys, pool_out["weights"], mask)
    if pool.diversity_loss_weight > 0:
        terms["diversity_loss"] = diversity_loss(pool_out["weights"], mask)
    return terms


def pool_term_weight(pool: PoolConfig, name: str) -> float:
    """The configured weight of the pool loss ``name`` (a key of ``pool_terms``)."""
    return {"key_loss": pool.key_loss_weight, "diversity_loss": pool.diversity_loss_weight}[name]


def pool_objective(pool: PoolConfig, terms: Mapping[str, jax.Array], rows: jax.Array) -> jax.Array:
    """The pool's share of one (micro-)batch's minimised sum: each term of ``pool_terms`` times its weight and
    ``rows`` (the micro-batch's ``real_rows``).

    A sum, not a mean, so that the step divides it once by the whole batch's real rows: each term is then a
    mean over the batch's rows whatever the micro-batching, as the MLM loss is over its predictions.
    """
    extra = jnp.zeros((), jnp.float32)
    for name, value in terms.items():
        extra = extra + pool_term_weight(pool, name) * value * rows
    return extra
