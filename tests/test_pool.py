"""The prompt pool against a plain NumPy re-implementation of its equations, and its gradients."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xlmp_jax.model import XLMP, EncoderLayer, ModelConfig, init_params
from xlmp_jax.pool import PoolConfig, PromptPool

B, T, D, M, LP = 5, 9, 16, 12, 3


def numpy_pool(emb, mask, keys, prompts, cfg: PoolConfig):
    """The pool's equations, written out example by example."""
    queries, weights = [], []
    for e, m in zip(emb, mask, strict=True):
        real = e[m.astype(bool)]
        if cfg.pooling == "mean":
            q = real.mean(0) if len(real) else np.zeros(D)
        elif cfg.pooling == "max":
            q = real.max(0) if len(real) else np.zeros(D)
        else:
            q = e[0]
        if cfg.score == "cosine":
            s = np.array([q @ k / max(np.linalg.norm(q), 1e-6) / max(np.linalg.norm(k), 1e-6) for k in keys])
        else:
            s = keys @ q
        s = s / cfg.temperature
        if cfg.retrieval == "topk":
            keep = np.argsort(-s)[: cfg.top_k]
            w = np.zeros(M)
            w[keep] = np.exp(s[keep] - s[keep].max())
        else:
            w = np.exp(s - s.max())
        queries.append(q)
        weights.append(w / w.sum())
    weights = np.array(weights)
    retrieved = np.stack([sum(w[j] * prompts[j] for j in range(M)) for w in weights])
    return np.array(queries), weights, retrieved


def random_inputs(seed=0):
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(B, T, D)).astype(np.float32)
    lengths = np.array([T, 4, 1, 7, 0])  # the last row is all padding
    mask = (np.arange(T)[None] < lengths[:, None]).astype(np.int32)
    return emb, mask


VARIANTS = [
    PoolConfig(size=M, length=LP),
    PoolConfig(size=M, length=LP, pooling="max", score="dot", temperature=2.0),
    PoolConfig(size=M, length=LP, pooling="first", temperature=0.5),
    PoolConfig(size=M, length=LP, retrieval="topk", top_k=3),
    PoolConfig(size=M, length=LP, retrieval="topk", top_k=1, score="dot"),
]


@pytest.mark.parametrize("cfg", VARIANTS, ids=lambda c: f"{c.pooling}-{c.score}-{c.retrieval}{c.top_k}")
def test_pool_matches_numpy(cfg):
    emb, mask = random_inputs()
    module = PromptPool(cfg, D)
    variables = module.init(jax.random.key(0), emb, mask)
    params = nn.unbox(variables)["params"]
    retrieved, info = module.apply(variables, emb, mask)
    q, w, r = numpy_pool(emb, mask, np.asarray(params["keys"]), np.asarray(params["prompts"]), cfg)
    np.testing.assert_allclose(info["query"], q, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(info["weights"], w, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(retrieved, r, rtol=1e-4, atol=1e-6)
    assert retrieved.shape == (B, LP, D)
    np.testing.assert_allclose(np.asarray(info["weights"]).sum(-1), 1.0, rtol=1e-5)
    if cfg.retrieval == "topk":
        assert ((np.asarray(info["weights"]) > 0).sum(-1) == cfg.top_k).all()


def test_model_prepends_prompts_and_extends_mask():
    """Layer 0 of the model sees [retrieved prompts; embeddings] with the prompts always attended."""
    cfg = ModelConfig.preset("tiny", pool=PoolConfig(size=M, length=LP))
    variables = init_params(cfg, jax.random.key(3))
    params = nn.unbox(variables)["params"]
    ids = np.array([[0, 11, 12, 13, 2, 1, 1], [0, 14, 2, 1, 1, 1, 1]])
    mask = (ids != 1).astype(np.int32)
    out, state = XLMP(cfg).apply(variables, ids, capture_intermediates=True)
    embedded = state["intermediates"]["embeddings"]["__call__"][0]
    _, _, retrieved = numpy_pool(
        np.asarray(embedded), mask, np.asarray(params["pool"]["keys"]), np.asarray(params["pool"]["prompts"]), cfg.pool
    )
    sequence = np.concatenate([retrieved, np.asarray(embedded)], axis=1)
    full_mask = np.concatenate([np.ones((2, LP), np.int32), mask], axis=1)
    expected = EncoderLayer(cfg).apply({"params": params["layer_0"]}, sequence, full_mask, True)
    got = state["intermediates"]["layer_0"]["__call__"][0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert out["hidden_states"].shape == (2, ids.shape[1], cfg.hidden_size)  # prompt positions dropped
    assert out["logits"].shape == (2, ids.shape[1], cfg.vocab_size)


def test_padding_does_not_change_real_tokens():
    cfg = ModelConfig.preset("tiny")
    variables = init_params(cfg, jax.random.key(4))
    short = np.array([[0, 21, 22, 23, 2]])
    padded = np.concatenate([short, np.ones((1, 6), np.int64)], axis=1)
    a = XLMP(cfg).apply(variables, short)
    b = XLMP(cfg).apply(variables, padded)
    np.testing.assert_allclose(a["logits"], b["logits"][:, :5], atol=1e-5)
    np.testing.assert_allclose(a["pool"]["weights"], b["pool"]["weights"], atol=1e-6)


def _grads(stop_gradient_query: bool):
    pool = PoolConfig(size=M, length=LP, stop_gradient_query=stop_gradient_query)
    cfg = ModelConfig.preset("tiny", pool=pool)
    variables = init_params(cfg, jax.random.key(5))
    ids = jax.random.randint(jax.random.key(6), (3, 10), 4, cfg.vocab_size - 1)
    probe = jax.random.normal(jax.random.key(7), (3, M))

    def pool_objective(params):
        out = XLMP(cfg).apply({"params": params}, ids)
        return jnp.sum(out["pool"]["weights"] * probe)  # depends on the encoder only via the query

    def mlm_objective(params):
        return jnp.mean(XLMP(cfg).apply({"params": params}, ids)["logits"] ** 2)

    params = variables["params"]
    return jax.grad(pool_objective)(params), jax.grad(mlm_objective)(params)


def _norm(tree) -> float:
    return float(sum(jnp.sum(jnp.abs(x)) for x in jax.tree.leaves(nn.unbox(tree))))


def test_gradients_reach_keys_prompts_and_query():
    pool_grads, mlm_grads = _grads(stop_gradient_query=False)
    assert _norm(mlm_grads["pool"]["keys"]) > 0
    assert _norm(mlm_grads["pool"]["prompts"]) > 0
    assert _norm(pool_grads["pool"]["keys"]) > 0
    assert _norm(pool_grads["embeddings"]["word_embeddings"]) > 0  # the query path learns


def test_stop_gradient_query_blocks_only_the_query_path():
    pool_grads, mlm_grads = _grads(stop_gradient_query=True)
    assert _norm(pool_grads["embeddings"]) == 0.0
    assert _norm(pool_grads["pool"]["keys"]) > 0
    assert _norm(mlm_grads["pool"]["prompts"]) > 0


def test_pool_is_vectorised_one_matmul_for_scores_one_for_mix():
    cfg = PoolConfig(size=M, length=LP)
    emb, mask = random_inputs()
    module = PromptPool(cfg, D)
    variables = module.init(jax.random.key(0), emb, mask)
    hlo = jax.jit(module.apply).lower(variables, emb, mask).as_text()
    assert hlo.count("dot_general") == 2  # scores [B,D]x[M,D] and mix [B,M]x[M,Lp,D]; no per-example loop
    assert "while" not in hlo


def test_config_replace_keeps_validation():
    with pytest.raises(ValueError, match=r"model\.pool\.top_k"):
        dataclasses.replace(PoolConfig(size=4), retrieval="topk", top_k=5)
