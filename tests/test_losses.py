"""The masked-LM loss against its definitions: cross-entropy, label smoothing, z-loss, accuracy, gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from xlmp_jax import losses


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
