"""Sparse-head loss, gradient accumulation, NaN skipping, eval step and the FLOPs formula.

Compiles each step once on one CPU device (eval on two) at a low XLA optimisation level to stay fast.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import (
    FAST,
    LANGS,
    B,
    T,
    eval_step_of,
    init_state,
    make_batch,
    mesh_of,
    model_of,
    tiny_config,
    train_step_of,
)

from data_pipelines.batch_format import max_predictions
from xlmp_jax.model.model_config import ModelConfig
from xlmp_jax.model.prompt_pool import diversity_loss, key_matching_loss
from xlmp_jax.model.xlmp import XLMP
from xlmp_jax.training import flops, metrics
from xlmp_jax.training import sharding as sh


def no_dropout_config(**train):
    config = tiny_config(**train)
    config.model.hidden_dropout = 0.0
    return config


@pytest.fixture(scope="module")
def one_device():
    mesh = sh.make_mesh(mesh_of(data=1, fsdp=1, tensor=1), jax.devices()[:1])
    config = no_dropout_config()
    state, shardings = init_state(config, mesh, jax.random.key(0), compiler_options=FAST)
    train_step = train_step_of(config, mesh, shardings, num_languages=LANGS, compiler_options=FAST)
    return dict(
        mesh=mesh, config=config, params=jax.device_get(state.params), shardings=shardings, train_step=train_step
    )


def fresh_state(setup, params=None):
    state, _ = init_state(
        setup["config"], setup["mesh"], jax.random.key(0), params=params or setup["params"], compiler_options=FAST
    )
    return state


# --- loss ---------------------------------------------------------------------------------------


def dense_reference_loss(config, params, batch):
    """Cross-entropy from logits at every position (what transformers does), weighted by the MLM weights."""
    model = XLMP(model_of(config))
    logits = model.apply({"params": params}, batch["input_ids"], batch["attention_mask"], batch["positions"])["logits"]
    per_token = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), batch["targets"])
    return float(jnp.sum(per_token * batch["weights"]) / jnp.sum(batch["weights"]))


@pytest.mark.slow
def test_sparse_head_loss_equals_dense_reference(one_device):
    batch = make_batch(0)
    reference = dense_reference_loss(one_device["config"], one_device["params"], batch)
    _, metrics = one_device["train_step"](fresh_state(one_device), sh.shard_batch(batch, one_device["mesh"]))
    np.testing.assert_allclose(float(metrics["loss"]), reference, rtol=1e-5)
    assert float(metrics["num_predictions"]) == batch["weights"].sum()
    counts = np.bincount(batch["language"], weights=batch["weights"].sum(1), minlength=LANGS)
    np.testing.assert_allclose(metrics["lang_count"], counts)
    np.testing.assert_allclose(float(metrics["lang_loss_sum"].sum()), float(metrics["nll_sum"]), rtol=1e-5)
    usage = np.asarray(metrics["pool_usage"])
    assert usage.shape == (8,) and abs(usage.sum() - 1) < 1e-5
    assert 0 < float(metrics["pool_usage_entropy"]) <= np.log(8) + 1e-5
    assert 0 < float(metrics["pool_example_entropy"]) <= float(metrics["pool_usage_entropy"]) + 1e-5
    assert metrics["pool_lang_weights"].shape == (LANGS, 8)
    assert float(metrics["learning_rate"]) == 0.0 and int(metrics["skipped"]) == 0


# --- gradient accumulation, NaN -----------------------------------------------------------------


def test_gradient_accumulation_equals_one_big_step(one_device):
    config = no_dropout_config(grad_accum_steps=2)
    mesh = one_device["mesh"]
    state, shardings = init_state(config, mesh, jax.random.key(0), params=one_device["params"], compiler_options=FAST)
    accum_step = train_step_of(config, mesh, shardings, num_languages=LANGS, compiler_options=FAST)
    plain = fresh_state(one_device)
    for i in range(2):  # the second step has lr > 0, so params move
        batch = sh.shard_batch(make_batch(10 + i), mesh)
        state, m_accum = accum_step(state, batch)
        plain, m_plain = one_device["train_step"](plain, batch)
        for key in ("loss", "grad_norm", "num_predictions", "mlm_accuracy", "pool_usage_entropy"):
            np.testing.assert_allclose(m_accum[key], m_plain[key], rtol=1e-5, err_msg=key)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
        jax.device_get(state.params),
        jax.device_get(plain.params),
    )


def test_non_finite_step_is_skipped_and_counted(one_device):
    step = one_device["train_step"]
    batch = sh.shard_batch(make_batch(3), one_device["mesh"])
    poisoned = jax.tree.map(np.copy, one_device["params"])
    poisoned["layer_1"]["output"]["kernel"][0, 0] = np.nan
    state = fresh_state(one_device, params=poisoned)
    opt_before = jax.device_get(state.opt_state)
    for expected_streak in (1, 2):
        state, metrics = step(state, batch)
        assert int(metrics["skipped"]) == 1 and int(metrics["nan_streak"]) == expected_streak
        assert int(state.nan_streak) == expected_streak and int(state.skipped) == expected_streak
    assert int(state.step) == 2
    jax.tree.map(
        lambda a, b: np.testing.assert_array_equal(a, b), jax.device_get(state.params), poisoned
    )  # NaN == NaN here
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), jax.device_get(state.opt_state), opt_before)
    # a finite step resets the streak; the schedule counts applied updates only (step - skipped = 0)
    state = state.replace(params=jax.device_put(one_device["params"], one_device["shardings"].params))
    state, metrics = step(state, batch)
    assert int(metrics["skipped"]) == 0 and int(state.nan_streak) == 0 and int(state.skipped) == 2
    assert float(metrics["learning_rate"]) == 0.0
    state, metrics = step(state, batch)
    np.testing.assert_allclose(float(metrics["learning_rate"]), 5e-4, rtol=1e-6)  # schedule(1), warmup 2


# --- eval ---------------------------------------------------------------------------------------


def test_eval_step_pads_an_uneven_batch_and_matches_the_dense_loss(one_device):
    config = one_device["config"]
    mesh = sh.make_mesh(mesh_of(data=2, fsdp=1, tensor=1), jax.devices()[:2])
    state, shardings = init_state(config, mesh, jax.random.key(0), params=one_device["params"], compiler_options=FAST)
    eval_step = eval_step_of(config, mesh, shardings, num_languages=LANGS, compiler_options=FAST)
    batch = {k: v[:7] for k, v in make_batch(5).items()}  # 7 rows on 2 data shards
    metrics = eval_step(state, batch)
    again = eval_step(state.params, batch)
    assert float(metrics["nll_sum"]) == float(again["nll_sum"])  # deterministic, params or state
    assert float(metrics["num_predictions"]) == batch["weights"].sum()
    np.testing.assert_allclose(
        float(metrics["loss"]), dense_reference_loss(config, one_device["params"], batch), rtol=1e-5
    )
    assert float(metrics["pool_examples"]) == 7  # the padding row is not counted


# --- pool terms and masked queries ------------------------------------------------------------------


def batch_with_empty_row(seed: int) -> dict[str, np.ndarray]:
    """``make_batch`` with its last row all padding (no tokens, no predictions)."""
    batch = make_batch(seed)
    for name, fill in (("input_ids", 1), ("positions", 1), ("attention_mask", 0), ("weights", 0), ("targets", 0)):
        batch[name][-1] = fill
    return batch


def reference_objective(config, params, batch, key_weight: float, diversity_weight: float):
    """MLM cross-entropy over dense logits + the weighted pool terms over the non-empty rows."""
    out = XLMP(model_of(config)).apply(
        {"params": params}, batch["input_ids"], batch["attention_mask"], batch["positions"]
    )
    per_token = optax.softmax_cross_entropy_with_integer_labels(out["logits"].astype(jnp.float32), batch["targets"])
    mlm = jnp.sum(per_token * batch["weights"]) / jnp.sum(batch["weights"])
    pool, mask = out["pool"], batch["attention_mask"]
    key = key_matching_loss(pool["query"], params["pool"]["keys"], pool["weights"], mask)
    div = diversity_loss(pool["weights"], mask)
    return mlm + key_weight * key + diversity_weight * div, (mlm, key, div)


@pytest.mark.slow
def test_pool_terms_join_the_objective_but_not_the_reported_loss(one_device):
    batch = batch_with_empty_row(3)
    params = one_device["params"]
    grad_norm = lambda kw, dw: float(  # noqa: E731
        optax.global_norm(jax.grad(reference_objective, argnums=1, has_aux=True)(config, params, batch, kw, dw)[0])
    )
    config = one_device["config"]
    # disabled (the default): the step minimises the MLM loss alone, and logs no pool terms
    _, off = one_device["train_step"](fresh_state(one_device), sh.shard_batch(batch, one_device["mesh"]))
    assert "pool_key_loss" not in off and "pool_diversity_loss" not in off
    np.testing.assert_allclose(float(off["grad_norm"]), grad_norm(0.0, 0.0), rtol=1e-4)
    # enabled: grad of MLM + 0.7 key + 0.3 diversity; `loss` stays the MLM loss, the terms are logged apart
    config = no_dropout_config()
    config.model.pool.key_loss_weight = 0.7
    config.model.pool.diversity_loss_weight = 0.3
    mesh = one_device["mesh"]
    state, shardings = init_state(config, mesh, jax.random.key(0), params=params, compiler_options=FAST)
    train_step = train_step_of(config, mesh, shardings, num_languages=LANGS, compiler_options=FAST)
    _, on = train_step(state, sh.shard_batch(batch, mesh))
    _, (mlm, key, div) = reference_objective(config, params, batch, 0.7, 0.3)
    np.testing.assert_allclose(float(on["loss"]), float(mlm), rtol=1e-5)
    np.testing.assert_allclose(float(on["loss"]), float(off["loss"]), rtol=1e-6)
    np.testing.assert_allclose(float(on["pool_key_loss"]), float(key), rtol=1e-5)
    np.testing.assert_allclose(float(on["pool_diversity_loss"]), float(div), rtol=1e-4, atol=1e-7)
    expected = grad_norm(0.7, 0.3)
    np.testing.assert_allclose(float(on["grad_norm"]), expected, rtol=1e-4)
    assert abs(expected - float(off["grad_norm"])) > 1e-3 * expected  # the terms do change the gradient
    assert 0 < float(key) < 2 and -1 <= float(div) <= 0


@pytest.mark.slow
def test_key_loss_is_exact_under_gradient_accumulation_and_logged(one_device):
    """The key term is a mean over the whole batch's non-empty rows, whatever the micro-batching."""
    batch = batch_with_empty_row(4)
    results = {}
    for accum in (1, 2):
        config = no_dropout_config(grad_accum_steps=accum)
        config.model.pool.key_loss_weight = 2.0
        mesh = one_device["mesh"]
        state, shardings = init_state(
            config, mesh, jax.random.key(0), params=one_device["params"], compiler_options=FAST
        )
        step = train_step_of(config, mesh, shardings, num_languages=LANGS, compiler_options=FAST)
        results[accum] = jax.device_get(step(state, sh.shard_batch(batch, mesh))[1])
    np.testing.assert_allclose(results[2]["grad_norm"], results[1]["grad_norm"], rtol=1e-5)
    np.testing.assert_allclose(results[2]["pool_key_loss"], results[1]["pool_key_loss"], rtol=1e-6)
    scalars, _ = metrics.summarize(results[2], ["a", "b", "c"])
    np.testing.assert_allclose(scalars["pool/key_loss"], results[1]["pool_key_loss"], rtol=1e-6)
    assert "pool/diversity_loss" not in scalars  # its weight is 0: not computed, not logged


def test_eval_step_routes_the_masked_input_not_the_clean_one(one_device):
    """The in-training eval's pool statistics come from the masked ids the MLM head sees."""
    config, params = one_device["config"], one_device["params"]
    mesh = one_device["mesh"]
    state, shardings = init_state(config, mesh, jax.random.key(0), params=params, compiler_options=FAST)
    eval_step = eval_step_of(config, mesh, shardings, num_languages=LANGS, compiler_options=FAST)
    batch = make_batch(7)
    metrics = eval_step(state, batch)
    model = XLMP(model_of(config))
    clean_ids = np.where(batch["weights"] > 0, batch["targets"], batch["input_ids"])

    def usage(ids):
        route = model.apply({"params": params}, ids, batch["attention_mask"], batch["positions"], method="route")
        return np.asarray(route["weights"]).sum(axis=0)

    got = np.asarray(metrics["pool_weight_sum"])
    np.testing.assert_allclose(got, usage(batch["input_ids"]), rtol=1e-5, atol=1e-6)
    assert np.abs(got - usage(clean_ids)).max() > 1e-3  # distinguishable: clean ids route differently


# --- FLOPs --------------------------------------------------------------------------------------


def dot_flops(stablehlo: str) -> float:
    """2 x output size x contracted size, summed over the dot_generals of a lowered StableHLO module.

    A dot whose lhs is a vector is a reduction written as a matrix-vector product (``layers.add_bias``'s
    gradient, ``ones @ g``), not model FLOPs, and is left out.
    """
    total = 0.0
    pattern = re.compile(
        r"stablehlo\.dot_general.*?contracting_dims = \[([\d, ]*)\] x .*?:\s*\(tensor<([^>]*)>, tensor<[^>]*>\)"
        r"\s*->\s*tensor<([^>]*)>"
    )
    for line in stablehlo.splitlines():
        match = pattern.search(line)
        if not match:
            continue
        contracting = [int(i) for i in match.group(1).split(",") if i.strip()]
        lhs = [int(d) for d in match.group(2).split("x")[:-1]]
        if len(lhs) == 1:
            continue
        out = [int(d) for d in match.group(3).split("x")[:-1]]
        total += 2.0 * np.prod(out) * np.prod([lhs[i] for i in contracting])
    return total


def test_flops_formula_counts_every_matmul_of_the_train_step(one_device):
    text = one_device["train_step"].lower(fresh_state(one_device), sh.shard_batch(make_batch(0), one_device["mesh"]))
    assert "dot_general" in text.as_text()
    counted = dot_flops(text.as_text())
    cfg = model_of(one_device["config"])
    k = max_predictions(T, one_device["config"].data.mlm_rate)
    formula = flops.flops_per_token(cfg, T, k) * B * T
    np.testing.assert_allclose(counted, formula, rtol=1e-3)
    # without a pool the formula is 6 x encoder params in matmuls + attention + head at K positions
    base = ModelConfig.preset("base", pool=False)
    d, f = 768, 3072
    expected = 6 * 12 * (4 * d * d + 2 * d * f) + 12 * 12 * 512 * d + 6 * (d * d + d * 250002) * 78 / 512
    np.testing.assert_allclose(flops.flops_per_token(base, 512, 78), expected, rtol=1e-12)


def test_mfu():
    assert flops.mfu(1000.0, 1e9, 4e12) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="peak_flops"):
        flops.mfu(1.0, 1.0, 0.0)
