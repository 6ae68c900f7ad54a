"""The optimizer: warm-up/decay schedule, weight-decay mask, AdamW's hyper-parameters and clipping."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from helpers import model_of, tiny_config

from configs.common import param_group
from xlmp_jax import config_utils
from xlmp_jax.model.xlmp import param_shapes
from xlmp_jax.training import optim


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


# -- schedules and parameter groups ---------------------------------------------------------------------------


def test_cosine_and_rsqrt_schedules_warm_up_then_decay():
    cosine = optim.make_schedule(_train(steps=110, warmup_steps=10, learning_rate=1e-3, lr_schedule="cosine"))
    np.testing.assert_allclose([cosine(s) for s in (5, 10, 60, 110)], [5e-4, 1e-3, 5e-4, 0.0], rtol=1e-5, atol=1e-9)
    rsqrt = optim.make_schedule(_train(steps=1000, warmup_steps=100, learning_rate=1e-3, lr_schedule="rsqrt"))
    np.testing.assert_allclose([rsqrt(s) for s in (50, 100, 400)], [5e-4, 1e-3, 5e-4], rtol=1e-5)
    with pytest.raises(ValueError, match="train.lr_schedule must be one of linear, cosine, rsqrt, got 'exp'"):
        _train(lr_schedule="exp")


def _groups(**groups):
    return ml_collections.ConfigDict({name: param_group(**fields) for name, fields in groups.items()})


def test_groups_are_checked_by_name_when_resolved():
    with pytest.raises(ValueError, match="'rest' names the parameters no group matches"):
        _train(param_groups=_groups(rest=dict(pattern="pool/.*")))
    with pytest.raises(ValueError, match=r"train.param_groups.pool.pattern='pool/\(' is not a regular expression"):
        _train(param_groups=_groups(pool=dict(pattern="pool/(")))
    with pytest.raises(ValueError, match="train.param_groups.pool.lr_multiplier must be a finite number > 0"):
        _train(param_groups=_groups(pool=dict(pattern="pool/.*", lr_multiplier=0.0)))
    with pytest.raises(ValueError, match="train.param_groups.pool.trainable_from=20 is not before train.steps=20"):
        _train(steps=20, param_groups=_groups(pool=dict(pattern="pool/.*", trainable_from=20)))
    shapes = param_shapes(model_of(tiny_config()))
    overlap = _train(param_groups=_groups(a=dict(pattern="pool/.*"), b=dict(pattern=".*/keys")))
    with pytest.raises(ValueError, match="parameter 'pool/keys' matches the patterns of train.param_groups a and b"):
        optim.group_sizes(shapes, overlap.param_groups)
    nothing = _train(param_groups=_groups(heads=dict(pattern="heads/.*")))
    with pytest.raises(
        ValueError, match=r"train.param_groups heads: the pattern matches no parameter \('heads/\.\*'\)"
    ):
        optim.group_sizes(shapes, nothing.param_groups)
    sizes = optim.group_sizes(shapes, _train(param_groups=_groups(pool=dict(pattern="pool/.*"))).param_groups)
    assert sizes["pool"] == 8 * 32 + 8 * 2 * 32  # keys [M, D] + prompts [M, Lp, D] of the tiny pool
    assert sizes["pool"] + sizes["rest"] == sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))


def test_a_group_that_starts_later_is_held_still_with_its_state_untouched():
    train = _train(
        steps=10,
        warmup_steps=0,
        learning_rate=0.1,
        weight_decay=0.0,
        grad_clip=0.0,
        param_groups=_groups(late=dict(pattern="late", trainable_from=2), off=dict(pattern="off", frozen=True)),
    )
    optimizer = optim.make_optimizer(train)
    params = {"late": jnp.ones(3), "early": jnp.ones(3), "off": jnp.ones(3)}
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
    state = optimizer.tx.init(params)
    assert optimizer.frozen_groups(0) == {"late", "off"} and optimizer.frozen_groups(2) == {"off"}
    first = None
    for n in range(4):
        updates, state = optimizer.tx.update(grads, state, params)
        if n < 2:
            assert not np.any(updates["late"]), n  # held: a zero update
        else:  # then a fresh AdamW: its first update is -lr * sign(g), as the early group's first was
            np.testing.assert_allclose(updates["late"], first if n == 2 else updates["late"], rtol=1e-6)
        if n == 0:
            first = updates["early"]
            np.testing.assert_allclose(first, -0.1, rtol=1e-5)
        assert not np.any(updates["off"])
    rates = optim.learning_rates(optimizer, jnp.asarray(1))
    assert float(rates["learning_rate/late"]) == 0.0 and float(rates["learning_rate/off"]) == 0.0
    np.testing.assert_allclose(float(rates["learning_rate/rest"]), 0.1 * (1 - 1 / 10), rtol=1e-6)
    np.testing.assert_allclose(float(optim.learning_rates(optimizer, jnp.asarray(2))["learning_rate/late"]), 0.1)
    # a frozen group has no optimizer state at all (no Adam moments for it)
    assert all(x.size in (1, 3) for x in jax.tree.leaves(state))
    moments = [x for x in jax.tree.leaves(state) if x.size == 3]
    assert len(moments) == 4  # mu and nu of `early` and `late` only


def test_frozen_groups_get_no_weight_gradients():
    config = tiny_config(param_groups=_groups(encoder=dict(pattern="(?!pool/).*", trainable_from=5)))
    run = config_utils.resolve(config)
    optimizer = optim.make_optimizer(run.train)
    shapes = param_shapes(run.model)
    labels = optimizer.labels(shapes)

    def loss(params, frozen):
        kept = optim.stop_frozen(params, labels, frozen)
        return sum(jnp.sum(jnp.sin(x)) for x in jax.tree.leaves(kept))

    params = jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype), shapes)
    grads = jax.grad(loss)(params, optimizer.frozen_groups(0))
    assert not any(np.any(g) for g in jax.tree.leaves({k: v for k, v in grads.items() if k != "pool"}))
    assert all(np.all(g) for g in jax.tree.leaves(grads["pool"]))
    # the frozen leaves' gradients are not computed at all: the gradient's program has a cos (sin's derivative)
    # per trainable leaf only
    count = lambda frozen: str(jax.make_jaxpr(jax.grad(loss), static_argnums=1)(params, frozen)).count(" cos ")  # noqa: E731
    assert count(frozenset()) == len(jax.tree.leaves(params))
    assert count(frozenset({"encoder"})) == len(jax.tree.leaves(params["pool"]))
