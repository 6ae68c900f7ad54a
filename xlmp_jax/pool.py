"""The XLM-P prompt pool: each input retrieves its own prompt, with no language id.

M learned keys ``k_j`` (D) and M prompts ``P_j`` (Lp x D). An input's query ``q`` pools its own token
embeddings; it is scored against every key, and the retrieved prompt is the score-weighted mix of the
prompts (soft retrieval) or of the top-k prompts (hard selection, weighted among the selected ones).
Inputs of related languages end up with similar queries and so share prompts ("soft language
clustering").

Everything is vectorised over the batch: one matmul for the scores, one einsum for the mix. The
module knows nothing of meshes: parameters carry logical axis names only (``prompts``,
``prompt_length``, ``embed``).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

POOLINGS = ("mean", "max", "first")
SCORES = ("cosine", "dot")
RETRIEVALS = ("soft", "topk")


@dataclasses.dataclass(frozen=True)
class PoolConfig:
    """Prompt-pool settings. Defaults marked "our choice" could not be checked against the paper offline."""

    size: int = 256  # M, number of keys/prompts. Our choice (paper's value unconfirmed offline).
    length: int = 4  # Lp, vectors per prompt. Our choice (paper's value unconfirmed offline).
    pooling: str = "mean"  # query = mean over non-pad token embeddings. Our choice.
    score: str = "cosine"  # cosine similarity between query and keys. Our choice.
    temperature: float = 0.1  # softmax temperature on the scores. Our choice.
    retrieval: str = "soft"  # softmax-weighted mix of all prompts (the paper's soft retrieval).
    top_k: int = 4  # only for retrieval="topk". Our choice.
    stop_gradient_query: bool = False  # let the query path learn from the MLM loss. Our choice.
    init_std: float = 0.02  # normal init of keys and prompts, as the encoder's other weights.

    def __post_init__(self):
        for name in ("size", "length", "top_k"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"model.pool.{name} must be a positive integer, got {value!r}")
        if self.retrieval == "topk" and self.top_k > self.size:
            raise ValueError(f"model.pool.top_k={self.top_k} exceeds model.pool.size={self.size}")
        if not self.temperature > 0:
            raise ValueError(f"model.pool.temperature must be > 0, got {self.temperature!r}")
        for name, allowed in (("pooling", POOLINGS), ("score", SCORES), ("retrieval", RETRIEVALS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"model.pool.{name}={getattr(self, name)!r} is not one of {allowed}")


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
    if pooling == "first":
        return embeddings[:, 0]
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
        init = nn.initializers.normal(cfg.init_std)
        keys = self.param(
            "keys",
            nn.with_logical_partitioning(init, ("prompts", "embed")),
            (cfg.size, self.hidden_size),
            self.param_dtype,
        )
        prompts = self.param(
            "prompts",
            nn.with_logical_partitioning(init, ("prompts", "prompt_length", "embed")),
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
