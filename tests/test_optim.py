"""The optimizer: warm-up/decay schedule, weight-decay mask, AdamW's hyper-parameters and clipping."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import model_of, tiny_config

from xlmp_jax import config_utils, optim
from xlmp_jax.model import param_shapes


def _train(**overrides):
    return config_utils.resolve(tiny_config(**overrides)).train


def test_schedule_warms_up_then_decays_linearly():
    schedule = optim.make_schedule(_train(steps=100, warmup_steps=10, learning_rate=1e-3))
    np.testing.assert_allclose(
        [schedule(s) for s in (0, 5, 10, 55, 100)], [0.0, 5e-4, 1e-3, 5e-4, 0.0], rtol=1e-6, atol=1e-9
    )
    no_warmup = optim.make_schedule(_train(steps=100, warmup_steps=0, learning_rate=1e-3))
    np.testing.assert_allclose([no_warmup(0), no_warmup(50)], [1e-3, 5e-4], rtol=1e-6)
    with pytest.raises(ValueError, match="train.warmup_steps=200"):
        _train(steps=100, warmup_steps=200)  # refused when the config is resolved


def test_weight_decay_only_on_weight_matrices():
    mask = optim.decay_mask(param_shapes(model_of(tiny_config())))
    assert mask["layer_0"]["attention"]["query"]["kernel"] is True
    assert mask["embeddings"]["word_embeddings"] is True
    assert mask["pool"]["prompts"] is True
    assert mask["layer_0"]["attention"]["query"]["bias"] is False
    assert mask["layer_0"]["output_layer_norm"]["scale"] is False
    assert mask["lm_head"]["bias"] is False
    # with zero gradients, AdamW moves exactly the decayed params, by -lr * wd * param
    train = _train(steps=10, warmup_steps=0, learning_rate=0.5, weight_decay=0.1, grad_clip=0.0)
    tx = optim.make_optimizer(train).tx
    params = {"dense": {"kernel": jnp.full((2, 3), 2.0), "bias": jnp.ones(3)}, "layer_norm": {"scale": jnp.ones(3)}}
    updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    np.testing.assert_allclose(updates["dense"]["kernel"], -0.5 * 0.1 * 2.0, rtol=1e-6)
    assert not np.any(updates["dense"]["bias"]) and not np.any(updates["layer_norm"]["scale"])


def test_adamw_uses_xlmr_hyperparameters_and_clipping():
    tx = optim.make_optimizer(_train(warmup_steps=0, learning_rate=1.0, grad_clip=1.0, weight_decay=0.0)).tx
    params = {"w": jnp.zeros(4)}
    grads = {"w": jnp.array([30.0, 40.0, 0.0, 0.0])}  # norm 50 -> clipped to [0.6, 0.8, 0, 0]
    updates, state = tx.update(grads, tx.init(params), params)
    # first Adam step: m/(sqrt(v)+eps) with bias correction = g/(|g| + eps) -> -lr * sign
    np.testing.assert_allclose(updates["w"], [-1.0, -1.0, 0.0, 0.0], atol=1e-5)
    adam = [s for s in jax.tree.leaves(state, is_leaf=lambda x: hasattr(x, "nu")) if hasattr(s, "nu")][0]
    np.testing.assert_allclose(adam.nu["w"], (1 - 0.98) * np.array([0.6, 0.8, 0, 0]) ** 2, rtol=1e-5)
