"""The prompt pool against a plain NumPy re-implementation of its equations, its gradients, and its
training-only terms (key matching, diversity) and routing-shift measure on hand-checked examples."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import random_params

from xlmp_jax.model.layers import EncoderLayer
from xlmp_jax.model.model_config import ModelConfig
from xlmp_jax.model.prompt_pool import (
    OLD_POOL_OPTIONS,
    PoolConfig,
    PromptPool,
    diversity_loss,
    key_matching_loss,
    routing_shift,
)
from xlmp_jax.model.xlmp import XLMP, init_params

B, T, D, M, LP = 5, 9, 16, 12, 3


def numpy_pool(emb, mask, keys, prompts, cfg: PoolConfig):
    """The pool's equations, written out example by example."""
    queries, weights = [], []
    for e, m in zip(emb, mask, strict=True):
        real = e[m.astype(bool)]
        if cfg.pooling == "mean":
            q = real.mean(0) if len(real) else np.zeros(D)
        else:
            q = real.max(0) if len(real) else np.zeros(D)
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
    PoolConfig(size=M, length=LP, pooling="max", temperature=0.5, prompt_init_std=1.0, key_loss_weight=1.0),
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


def test_a_saved_pool_without_the_training_options_gets_their_old_values():
    # Written before they existed (an old config.json or prompt_pool.json): the losses were off and the prompts
    # drawn with the keys' init_std; a field it holds wins, and a fresh PoolConfig has the new defaults.
    old = PoolConfig.from_saved({"size": M, "length": LP, "init_std": 0.05})
    assert (old.key_loss_weight, old.diversity_loss_weight, old.prompt_init_std) == (0.0, 0.0, 0.05)
    assert PoolConfig.from_saved({"size": M}) == PoolConfig(size=M, **OLD_POOL_OPTIONS)
    assert PoolConfig.from_saved({"key_loss_weight": 0.3}).key_loss_weight == 0.3
    assert PoolConfig.from_saved(dataclasses.asdict(PoolConfig())) == PoolConfig()
    fresh = PoolConfig()
    assert (fresh.key_loss_weight, fresh.diversity_loss_weight, fresh.prompt_init_std) == (0.1, 0.1, 1.0)


@pytest.mark.slow
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
    assert out["logits"].shape == (2, ids.shape[1], cfg.padded_vocab_size)


@pytest.mark.slow
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
    return jax.jit(jax.grad(pool_objective))(params), jax.jit(jax.grad(mlm_objective))(params)


def _norm(tree) -> float:
    return float(sum(jnp.sum(jnp.abs(x)) for x in jax.tree.leaves(nn.unbox(tree))))


@pytest.mark.slow
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


# --- config ------------------------------------------------------------------------------------------


def test_first_pooling_is_removed_with_a_clear_error():
    with pytest.raises(ValueError, match=r"model\.pool\.pooling='first' was removed: it gives every input the same"):
        PoolConfig(pooling="first")
    with pytest.raises(ValueError, match=r"model\.pool\.pooling='cls' is not one of \('mean', 'max'\)"):
        PoolConfig(pooling="cls")


@pytest.mark.parametrize(
    "field, value",
    [
        ("key_loss_weight", -0.5),
        ("diversity_loss_weight", -1),
        ("diversity_loss_weight", float("nan")),
        ("prompt_init_std", -0.1),
        ("init_std", float("inf")),
        ("key_loss_weight", True),
        ("key_loss_weight", "1"),
    ],
)
def test_bad_pool_values_name_the_field_and_value(field, value):
    with pytest.raises(ValueError, match=rf"model\.pool\.{field} must be a finite number >= 0, got {value!r}"):
        PoolConfig(**{field: value})


def test_unknown_pool_field_is_an_error():
    with pytest.raises(ValueError, match=r"unknown pool config field\(s\): model\.pool\.key_los_weight"):
        ModelConfig.from_dict({"pool": {"enabled": True, "key_los_weight": 1.0}})


# --- prompt initialisation ---------------------------------------------------------------------------


def _pool_params(**overrides):
    emb, mask = random_inputs()
    module = PromptPool(PoolConfig(size=M, length=LP, **overrides), D)
    variables = module.init(jax.random.key(0), emb, mask)
    return module, variables, nn.unbox(variables)["params"]


def test_prompt_init_std_scales_only_the_prompts():
    _, _, old = _pool_params(prompt_init_std=0.02)  # the old init: prompts drawn like the keys (init_std 0.02)
    _, _, big = _pool_params(prompt_init_std=1.0)
    np.testing.assert_array_equal(big["keys"], old["keys"])  # the key init is untouched
    np.testing.assert_allclose(big["prompts"], old["prompts"] * 50.0, rtol=1e-6)  # same draw, 50x the scale
    assert 0.8 < float(np.std(big["prompts"])) < 1.2
    _, _, default = _pool_params()
    np.testing.assert_array_equal(default["prompts"], big["prompts"])  # the default: token-sized prompts


@pytest.mark.slow
def test_token_sized_prompts_change_the_forward_pass_at_step_0():
    """A layer-normed token has norm ~sqrt(D); the 0.02 prompt is ~1 % of that, a 1.0 prompt a large part."""
    cfg = ModelConfig.preset("tiny", pool=PoolConfig(size=M, length=LP))
    ids = jax.random.randint(jax.random.key(1), (4, 12), 4, cfg.vocab_size - 1)
    ratios = {}
    for std in (0.02, 1.0):
        config = dataclasses.replace(cfg, pool=PoolConfig(size=M, length=LP, prompt_init_std=std))
        variables = init_params(config, jax.random.key(2))
        _, state = XLMP(config).apply(variables, ids, capture_intermediates=True)
        retrieved = state["intermediates"]["pool"]["__call__"][0][0]
        ratios[std] = float(jnp.linalg.norm(retrieved, axis=-1).mean()) / np.sqrt(cfg.hidden_size)
    assert ratios[0.02] < 0.02
    assert ratios[1.0] > 0.2


# --- key-matching loss -------------------------------------------------------------------------------


def _hand_example():
    keys = jnp.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    query = jnp.array([[1.0, 1.0], [5.0, 5.0], [0.0, -3.0]])
    weights = jnp.array([[0.5, 0.25, 0.25], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    mask = jnp.array([[1, 1, 0], [0, 0, 0], [1, 0, 0]])  # row 1 is all padding: it must not count
    return query, keys, weights, mask


def test_key_matching_loss_on_a_hand_checked_example():
    query, keys, weights, mask = _hand_example()
    # row 0: 0.5 (1 - 1/sqrt2) + 0.25 (1 - 1/sqrt2) + 0.25 (1 + 1/sqrt2) = 0.646447; row 2: cos([0,-3], k2) = 0 -> 1
    assert float(key_matching_loss(query, keys, weights, mask)) == pytest.approx((0.6464466 + 1.0) / 2, rel=1e-6)


def test_key_matching_loss_moves_the_keys_only():
    query, keys, weights, mask = _hand_example()
    g_query, g_keys, g_weights = jax.grad(key_matching_loss, argnums=(0, 1, 2))(query, keys, weights, mask)
    assert float(jnp.abs(g_query).sum()) == 0.0 and float(jnp.abs(g_weights).sum()) == 0.0
    assert float(jnp.abs(g_keys).sum()) > 0.1
    before = float(key_matching_loss(query, keys, weights, mask))
    after = float(key_matching_loss(query, keys - 0.1 * g_keys, weights, mask))
    assert after < before - 1e-3  # a step down the gradient pulls the keys toward their queries


def test_key_matching_loss_through_the_model_reaches_keys_not_the_query_path():
    cfg = ModelConfig.preset("tiny", pool=PoolConfig(size=M, length=LP))
    params = nn.unbox(init_params(cfg, jax.random.key(5)))["params"]
    ids = jax.random.randint(jax.random.key(6), (3, 10), 4, cfg.vocab_size - 1)
    mask = jnp.ones_like(ids)

    def objective(p):
        out = XLMP(cfg).apply({"params": p}, ids, mask, method="route")
        return key_matching_loss(out["query"], p["pool"]["keys"], out["weights"], mask)

    grads = jax.grad(objective)(params)
    assert _norm(grads["pool"]["keys"]) > 0
    assert _norm(grads["embeddings"]) == 0.0 and _norm(grads["pool"]["prompts"]) == 0.0


# --- diversity (information maximisation) ------------------------------------------------------------


def test_diversity_loss_on_hand_checked_examples():
    real = jnp.ones((2, 1))
    assert float(diversity_loss(jnp.array([[1.0, 0.0], [0.0, 1.0]]), real)) == pytest.approx(-1.0)  # decided, spread
    assert float(diversity_loss(jnp.array([[1.0, 0.0], [1.0, 0.0]]), real)) == pytest.approx(0.0)  # collapsed
    assert float(diversity_loss(jnp.full((2, 2), 0.5), real)) == pytest.approx(0.0, abs=1e-7)  # undecided
    # H(.9,.1) = 0.325083, H(.5,.5) = 0.693147, mean 0.509115; H(.7,.3) = 0.610864 -> -0.101749 / ln 2
    weights = jnp.array([[0.9, 0.1], [0.5, 0.5], [0.0, 1.0]])
    mask = jnp.array([[1, 1], [1, 0], [0, 0]])  # the third (all-padding) row is ignored
    assert float(diversity_loss(weights, mask)) == pytest.approx(-0.1467931, rel=1e-5)


def test_diversity_loss_reaches_keys_and_the_query_path():
    cfg = ModelConfig.preset("tiny", pool=PoolConfig(size=M, length=LP))
    params = nn.unbox(init_params(cfg, jax.random.key(5)))["params"]
    ids = jax.random.randint(jax.random.key(6), (3, 10), 4, cfg.vocab_size - 1)
    mask = jnp.ones_like(ids)

    def objective(p):
        return diversity_loss(XLMP(cfg).apply({"params": p}, ids, mask, method="route")["weights"], mask)

    grads = jax.grad(objective)(params)
    assert _norm(grads["pool"]["keys"]) > 0
    assert _norm(grads["embeddings"]["word_embeddings"]) > 0
    assert _norm(grads["pool"]["prompts"]) == 0.0  # the prompts do not take part in the routing


@pytest.mark.parametrize("retrieval", ["soft", "topk"])
def test_pool_losses_have_no_nan_on_all_padding_rows(retrieval):
    cfg = PoolConfig(size=M, length=LP, retrieval=retrieval, top_k=2)
    emb = np.random.default_rng(0).normal(size=(3, T, D)).astype(np.float32)  # pads have embeddings too
    mask = np.zeros((3, T), np.int32)  # nothing but padding: zero queries, no row counts
    module = PromptPool(cfg, D)
    variables = module.init(jax.random.key(0), emb, mask)

    def losses(params, emb):
        _, info = module.apply({"params": params}, emb, mask)
        return key_matching_loss(info["query"], params["keys"], info["weights"], mask) + (
            diversity_loss(info["weights"], mask)
        )

    params = nn.unbox(variables)["params"]
    value, (g_params, g_emb) = jax.value_and_grad(losses, argnums=(0, 1))(params, emb)
    assert float(value) == 0.0
    for leaf in jax.tree.leaves(nn.unbox((g_params, g_emb))):
        assert np.isfinite(np.asarray(leaf)).all()


# --- routing shift (masked vs clean) -----------------------------------------------------------------


def test_routing_shift_on_a_constructed_case():
    first = jnp.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.2, 0.3, 0.5], [0.6, 0.4, 0.0]])
    second = jnp.array([[0.0, 1.0, 0.0], [0.5, 0.0, 0.5], [0.2, 0.3, 0.5], [0.4, 0.6, 0.0]])
    out = {k: np.asarray(v) for k, v in routing_shift(first, second).items()}
    np.testing.assert_allclose(out["tv"], [1.0, 0.5, 0.0, 0.2], atol=1e-6)
    # row 1: m = (.5, .25, .25): KL(p||m) = .5 log2(.5/.25) = .5 bit each way; row 3: by the formula below
    m = np.array([0.5, 0.5])
    kl = lambda p: float(np.sum(p * np.log2(p / m)))  # noqa: E731
    row3 = 0.5 * kl(np.array([0.6, 0.4])) + 0.5 * kl(np.array([0.4, 0.6]))
    np.testing.assert_allclose(out["jsd"], [1.0, 0.5, 0.0, row3], atol=1e-6)
    np.testing.assert_array_equal(out["top_changed"], [1.0, 0.0, 0.0, 1.0])


def test_route_is_the_routing_of_the_forward_pass():
    cfg = ModelConfig.preset("tiny", pool=PoolConfig(size=M, length=LP))
    variables = {"params": random_params(cfg, seed=3)}  # NumPy of the model's shapes: no init compiled
    ids = np.array([[0, 11, 12, 13, 2, 1, 1], [0, 14, 2, 1, 1, 1, 1]])
    full = XLMP(cfg).apply(variables, ids)["pool"]
    routed = XLMP(cfg).apply(variables, ids, method="route")
    for name in ("weights", "scores", "query"):
        np.testing.assert_array_equal(routed[name], full[name])
    with pytest.raises(ValueError, match="model.pool is disabled"):
        baseline = dataclasses.replace(cfg, pool=None)
        XLMP(baseline).apply({"params": random_params(baseline)}, ids, method="route")
