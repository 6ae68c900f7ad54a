"""The XLM-P prompt pool: each input retrieves its own prompt, with no language id.

M learned keys ``k_j`` (D) and M prompts ``P_j`` (Lp x D). An input's query ``q`` pools its own token
embeddings; it is scored against every key, and the retrieved prompt is the score-weighted mix of the
prompts (soft retrieval) or of the top-k prompts (hard selection, weighted among the selected ones).
Inputs of related languages end up with similar queries and so share prompts ("soft language
clustering").

Everything is vectorised over the batch: one matmul for the scores, one einsum for the mix. The
module knows nothing of meshes: parameters carry logical axis names only (``prompts``,
``prompt_length``, ``embed``).

Two training-only terms (pure functions here, added to the objective by ``xlmp_jax.training.steps``) give the pool a
reason to cluster beyond what the MLM loss asks for: ``key_matching_loss`` (keys follow the queries that
retrieve them) and ``diversity_loss`` (information maximisation against collapse). ``routing_shift``
measures how far an input's routing moves between two forms of it (masked vs clean text).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

POOLINGS = ("mean", "max")
# Removed: the query is pooled from the embedding layer, where the first token is always <s> at position 0,
# so "first" gave every input the same query (and so the same prompt).
REMOVED_POOLINGS = {"first": "it gives every input the same query (the <s> row of the embedding layer)"}
SCORES = ("cosine", "dot")
RETRIEVALS = ("soft", "topk")
# The pool's training options at their values before they became PoolConfig's defaults: the MLM-only pool (no
# key-matching or diversity term, prompts drawn like the keys). What a saved block without them was trained
# with (``PoolConfig.from_saved``), and the "old pool" that benchmarks and bench.science's ablation run.
OLD_POOL_OPTIONS = dict(key_loss_weight=0.0, diversity_loss_weight=0.0, prompt_init_std=0.02)


@dataclasses.dataclass(frozen=True)
class PoolConfig:
    """Prompt-pool settings: the one home of the pool's defaults (the run configs only override them).

    Defaults marked "our choice" could not be checked against the paper offline. A pool block read back from a
    saved config goes through ``from_saved``, so one written before a field existed keeps its old behaviour.
    """

    size: int = 256  # M, number of keys/prompts. Our choice (paper's value unconfirmed offline).
    length: int = 4  # Lp, vectors per prompt. Our choice (paper's value unconfirmed offline).
    pooling: str = "mean"  # query = mean over non-pad token embeddings. Our choice.
    score: str = "cosine"  # cosine similarity between query and keys. Our choice.
    temperature: float = 0.1  # softmax temperature on the scores. Our choice.
    retrieval: str = "soft"  # softmax-weighted mix of all prompts (the paper's soft retrieval).
    top_k: int = 4  # only for retrieval="topk". Our choice.
    stop_gradient_query: bool = False  # let the query path learn from the MLM loss. Our choice.
    init_std: float = 0.02  # normal init of the keys, as the encoder's other weights. Our choice.
    # Normal init of the prompts. They are prepended after the embedding LayerNorm, where a token vector has
    # per-element std ~1 (norm ~sqrt(D)): at 0.02 a prompt is ~50x smaller than a token and barely changes
    # the forward pass at first; ~1.0 makes each prompt token-sized (a near-uniform soft mix of M prompts
    # still shrinks by ~sqrt(sum w^2)). Our choice, fixed before measuring (bench.science's ablation compares it
    # with the old 0.02, SCIENCE.md).
    prompt_init_std: float = 1.0
    # Training-only terms (see key_matching_loss / diversity_loss); 0 disables (the old, MLM-only objective).
    # Our choice, fixed before measuring, then compared with the old pool by bench.science (SCIENCE.md).
    key_loss_weight: float = 0.1
    diversity_loss_weight: float = 0.1

    def __post_init__(self):
        for name in ("size", "length", "top_k"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"model.pool.{name} must be a positive integer, got {value!r}")
        if self.retrieval == "topk" and self.top_k > self.size:
            raise ValueError(f"model.pool.top_k={self.top_k} exceeds model.pool.size={self.size}")
        if not self.temperature > 0:
            raise ValueError(f"model.pool.temperature must be > 0, got {self.temperature!r}")
        if self.pooling in REMOVED_POOLINGS:
            raise ValueError(
                f"model.pool.pooling={self.pooling!r} was removed: {REMOVED_POOLINGS[self.pooling]}; use one of {POOLINGS}"
            )
        for name, allowed in (("pooling", POOLINGS), ("score", SCORES), ("retrieval", RETRIEVALS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"model.pool.{name}={getattr(self, name)!r} is not one of {allowed}")
        for name in ("init_std", "prompt_init_std", "key_loss_weight", "diversity_loss_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
                raise ValueError(f"model.pool.{name} must be a finite number >= 0, got {value!r}")

    @classmethod
    def from_saved(cls, values: Mapping[str, Any]) -> PoolConfig:
        """The pool of a saved config (a run's ``config.json``, an export's ``prompt_pool.json``).

        A block written before the training options existed was trained without them: no key-matching or
        diversity term, and prompts drawn like the keys (``init_std``). It gets those values back, not today's
        defaults, so an old checkpoint or export keeps meaning what it meant. Any other field it lacks takes
        its default.
        """
        values = dict(values)
        old = {**OLD_POOL_OPTIONS, "prompt_init_std": values.get("init_std", cls.init_std)}
        return cls(**{**old, **values})


def pool_query(embeddings: jax.Array, mask: jax.Array, pooling: str) -> jax.Array:
    """Pools ``embeddings`` [B, T, D] over the tokens where ``mask`` [B, T] is 1 into [B, D].

    An all-padding row gets the zero query (not NaN), so it scores every key equally.
    """
    mask = mask.astype(embeddings.dtype)[..., None]
    if pooling == "mean":
        count = jnp.maximum(mask.sum(axis=1), 1.0)
        return (embeddings * mask).sum(axis=1) / count
    if pooling == "max":
        masked = jnp.where(mask > 0, embeddings, -jnp.inf)
        pooled = masked.max(axis=1)
        return jnp.where(jnp.isfinite(pooled), pooled, 0.0)
    raise ValueError(f"model.pool.pooling={pooling!r} is not one of {POOLINGS}")


def _l2_normalize(x: jax.Array, eps: float = 1e-6) -> jax.Array:
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps * eps))


def retrieval_scores(query: jax.Array, keys: jax.Array, score: str, temperature: float) -> jax.Array:
    """Scores [B, M] of every query [B, D] against every key [M, D], divided by the temperature."""
    if score == "cosine":
        query, keys = _l2_normalize(query), _l2_normalize(keys)
    return jnp.einsum("bd,md->bm", query, keys) / temperature


def retrieval_weights(scores: jax.Array, retrieval: str, top_k: int) -> jax.Array:
    """Mixing weights [B, M] over the pool: softmax over all (soft) or over the top-k scores."""
    if retrieval == "topk":
        _, selected = jax.lax.top_k(scores, top_k)
        is_selected = jax.nn.one_hot(selected, scores.shape[-1], dtype=jnp.bool_).any(axis=1)
        scores = jnp.where(is_selected, scores, -jnp.inf)
    return jax.nn.softmax(scores.astype(jnp.float32), axis=-1)


class PromptPool(nn.Module):
    """Retrieves one prompt (Lp x D) per input from M keyed prompts; usable in front of any encoder."""

    config: PoolConfig
    hidden_size: int
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, embeddings: jax.Array, mask: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Returns the retrieved prompts [B, Lp, D] and ``{weights, scores, query}`` for analysis."""
        cfg = self.config
        keys = self.param(
            "keys",
            nn.with_logical_partitioning(nn.initializers.normal(cfg.init_std), ("prompts", "embed")),
            (cfg.size, self.hidden_size),
            self.param_dtype,
        )
        prompts = self.param(
            "prompts",
            nn.with_logical_partitioning(
                nn.initializers.normal(cfg.prompt_init_std), ("prompts", "prompt_length", "embed")
            ),
            (cfg.size, cfg.length, self.hidden_size),
            self.param_dtype,
        )
        # The query and scores stay in fp32: they are tiny, and the softmax is sensitive.
        query = pool_query(embeddings.astype(jnp.float32), mask, cfg.pooling)
        if cfg.stop_gradient_query:
            query = jax.lax.stop_gradient(query)
        scores = retrieval_scores(query, keys.astype(jnp.float32), cfg.score, cfg.temperature)
        weights = retrieval_weights(scores, cfg.retrieval, cfg.top_k)
        retrieved = jnp.einsum("bm,mld->bld", weights.astype(self.dtype), prompts.astype(self.dtype))
        retrieved = nn.with_logical_constraint(retrieved, ("batch", "prompt_length", "embed"))
        return retrieved, {"weights": weights, "scores": scores, "query": query}


def _real_rows(mask: jax.Array) -> jax.Array:
    """[B] float: 1 for rows with at least one real token (all-padding rows get no say in the losses)."""
    return (jnp.sum(mask, axis=-1) > 0).astype(jnp.float32)


def key_matching_loss(query: jax.Array, keys: jax.Array, weights: jax.Array, mask: jax.Array) -> jax.Array:
    """Pulls the keys of the retrieved prompts toward the query: the prompt-pool (L2P-style) surrogate.

    Per row ``sum_j w_j * (1 - cos(q, k_j))`` with the query and the retrieval weights stop-gradient, so the
    loss moves only the keys (never the query path, and never sharpens the routing by itself); averaged
    over the rows of ``mask`` [B, T] with a real token. Cosine whatever ``score``: it pulls directions,
    and a dot-product score would otherwise reward growing key norms. Returns a scalar in [0, 2].
    """
    query = jax.lax.stop_gradient(_l2_normalize(query.astype(jnp.float32)))
    weights = jax.lax.stop_gradient(weights.astype(jnp.float32))
    cosine = jnp.einsum("bd,md->bm", query, _l2_normalize(keys.astype(jnp.float32)))
    per_row = jnp.sum(weights * (1.0 - cosine), axis=-1)
    real = _real_rows(mask)
    return jnp.sum(jnp.where(real > 0, per_row, 0.0)) / jnp.maximum(real.sum(), 1.0)


def entropy(p: jax.Array) -> jax.Array:
    """Shannon entropy (nats) over the last axis; 0 log 0 = 0, with a finite gradient at p = 0."""
    safe = jnp.where(p > 0, p, 1.0)
    return -jnp.sum(jnp.where(p > 0, p * jnp.log(safe), 0.0), axis=-1)


def diversity_loss(weights: jax.Array, mask: jax.Array) -> jax.Array:
    """Information maximisation over the routing ``weights`` [B, M] of the rows of ``mask`` with a token.

    ``(mean_i H(w_i) - H(mean_i w_i)) / log M``, in [-1, 1]: minimising it spreads the batch over many
    prompts (high entropy of the mean routing) while keeping each input decided (low per-input entropy).
    Not batch-level load balancing (equal use of every prompt within each batch): batches are
    temperature-sampled mixes in which a few high-resource languages fill most rows, and balancing them
    would split each of those languages over many prompts, against clustering by language. Here one
    language may keep one prompt; only the pool as a whole is pushed away from collapse. The mean is over
    this (micro-)batch, not a running window. Gradients reach keys and the query path through ``weights``.
    """
    size = weights.shape[-1]
    if size < 2:
        return jnp.zeros((), jnp.float32)
    weights = weights.astype(jnp.float32)
    real = _real_rows(mask)
    count = jnp.maximum(real.sum(), 1.0)
    per_input = jnp.sum(entropy(weights) * real) / count
    marginal = jnp.sum(weights * real[:, None], axis=0) / count
    return (per_input - entropy(marginal)) / jnp.log(float(size))


def routing_shift(first: jax.Array, second: jax.Array) -> dict[str, jax.Array]:
    """Per row, how far routing ``first`` [B, M] is from ``second`` [B, M] (e.g. masked vs clean input).

    ``tv``: total variation, in [0, 1]; ``jsd``: Jensen-Shannon divergence in bits, in [0, 1];
    ``top_changed``: 1.0 where the argmax prompt differs.
    """
    first, second = first.astype(jnp.float32), second.astype(jnp.float32)
    middle = 0.5 * (first + second)
    jsd = (entropy(middle) - 0.5 * (entropy(first) + entropy(second))) / jnp.log(2.0)
    return {
        "tv": 0.5 * jnp.sum(jnp.abs(first - second), axis=-1),
        "jsd": jnp.maximum(jsd, 0.0),
        "top_changed": (jnp.argmax(first, axis=-1) != jnp.argmax(second, axis=-1)).astype(jnp.float32),
    }
