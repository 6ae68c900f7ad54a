"""The losses against their definitions: MLM cross-entropy, label smoothing, z-loss, accuracy, gradient; the pool terms."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from xlmp_jax.model.prompt_pool import PoolConfig
from xlmp_jax.training import losses, step_metrics


def test_label_smoothing_and_z_loss_match_their_definitions():
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(2, 3, 11)), jnp.float32)
    targets = jnp.asarray(rng.integers(0, 11, (2, 3)), jnp.int32)
    weights = jnp.asarray([[1, 1, 0], [1, 0, 0]], jnp.float32)
    out = losses.mlm_loss(logits, targets, weights, label_smoothing=0.1, z_loss=1e-2)
    smoothed = optax.smooth_labels(jax.nn.one_hot(targets, 11), 0.1)
    expected = optax.softmax_cross_entropy(logits, smoothed) + 1e-2 * jax.nn.logsumexp(logits, -1) ** 2
    np.testing.assert_allclose(out["objective"], expected, rtol=1e-5)
    np.testing.assert_allclose(out["nll"], optax.softmax_cross_entropy_with_integer_labels(logits, targets), rtol=1e-5)
    np.testing.assert_allclose(out["loss"], float(jnp.sum(expected * weights) / 3), rtol=1e-5)


def test_mlm_loss_accuracy_and_gradient_match_references():
    rng = np.random.default_rng(1)
    logits = jnp.asarray(rng.normal(size=(3, 5, 17)) * 3, jnp.float32)
    targets = jnp.asarray(rng.integers(0, 17, (3, 5)), jnp.int32)
    targets = targets.at[0, 0].set(jnp.argmax(logits[0, 0]))  # at least one hit
    weights = jnp.asarray(rng.integers(0, 2, (3, 5)), jnp.float32)
    out = losses.mlm_loss(logits, targets, weights)
    np.testing.assert_array_equal(out["correct"], (jnp.argmax(logits, -1) == targets).astype(jnp.float32))

    def reference(x):
        xent = optax.softmax_cross_entropy_with_integer_labels(x, targets)
        return jnp.sum(xent * weights) / jnp.sum(weights)

    ours = jax.grad(lambda x: losses.mlm_loss(x, targets, weights)["loss"])(logits)
    np.testing.assert_allclose(ours, jax.grad(reference)(logits), rtol=1e-5, atol=1e-7)


def test_pool_terms_objective_and_sums_match_a_direct_computation():
    """The pool's loss terms (``losses``), their weighted share of the objective and the sums the step logs
    (``step_metrics.pool_sums`` / ``finalize``), against the terms written out row by row."""
    rng = np.random.default_rng(0)
    b, t, m, d = 5, 6, 4, 3
    query = rng.normal(size=(b, d)).astype(np.float32)
    keys = rng.normal(size=(m, d)).astype(np.float32)
    weights = np.asarray(jax.nn.softmax(rng.normal(size=(b, m)).astype(np.float32)), np.float64)
    lengths = np.array([6, 2, 0, 1, 4])  # row 2 is all padding: it counts in no term
    mask = (np.arange(t)[None] < lengths[:, None]).astype(np.int32)
    pool = PoolConfig(size=m, length=2, key_loss_weight=0.7, diversity_loss_weight=0.3)

    real = lengths > 0
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    cosine = unit(query.astype(np.float64)) @ unit(keys.astype(np.float64)).T
    key = np.mean([np.sum(weights[i] * (1 - cosine[i])) for i in range(b) if real[i]])
    entropy = lambda p: -np.sum(p * np.log(p), axis=-1)  # noqa: E731
    diversity = (entropy(weights[real]).mean() - entropy(weights[real].mean(axis=0))) / np.log(m)

    terms = losses.pool_terms(pool, jnp.asarray(keys), {"query": query, "weights": weights.astype(np.float32)}, mask)
    assert set(terms) == {"key_loss", "diversity_loss"}
    np.testing.assert_allclose(float(terms["key_loss"]), key, rtol=1e-5)
    np.testing.assert_allclose(float(terms["diversity_loss"]), diversity, rtol=1e-4, atol=1e-6)
    rows = losses.real_rows(mask)
    assert float(rows) == real.sum() == 4
    objective = losses.pool_objective(pool, terms, rows)
    np.testing.assert_allclose(float(objective), (0.7 * key + 0.3 * diversity) * 4, rtol=1e-5, atol=1e-6)
    sums = step_metrics.pool_sums(terms, rows)
    assert set(sums) == {"pool_key_loss_sum", "pool_diversity_loss_sum"}
    logged = step_metrics.finalize(
        {
            "nll_sum": 0.0,
            "objective_sum": 0.0,
            "correct_sum": 0.0,
            "num_predictions": 0.0,
            "pool_examples": rows,
            **sums,
        }
    )
    np.testing.assert_allclose(float(logged["pool_key_loss"]), key, rtol=1e-5)
    np.testing.assert_allclose(float(logged["pool_diversity_loss"]), diversity, rtol=1e-4, atol=1e-6)

    # a term whose weight is 0 is neither computed nor added nor logged
    only_key = PoolConfig(size=m, length=2, key_loss_weight=2.0, diversity_loss_weight=0.0)
    terms = losses.pool_terms(only_key, jnp.asarray(keys), {"query": query, "weights": weights}, mask)
    assert set(terms) == {"key_loss"}
    np.testing.assert_allclose(float(losses.pool_objective(only_key, terms, rows)), 2.0 * key * 4, rtol=1e-5)
    assert set(step_metrics.pool_sums(terms, rows)) == {"pool_key_loss_sum"}
