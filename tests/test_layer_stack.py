"""Scan over layers (model.scan_layers) against the Python loop, and the conversion between their params
(xlmp_jax.model.layer_stack): same loss and gradients with dropout off, round trips, transformers export."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import random_params

from xlmp_jax.model import layer_stack
from xlmp_jax.model.model_config import ModelConfig
from xlmp_jax.model.prompt_pool import PoolConfig
from xlmp_jax.model.xlmp import XLMP, init_params, param_shapes


def _config(**kw) -> ModelConfig:
    pool = PoolConfig(size=8, length=2)
    base = dict(hidden_dropout=0.0, attention_dropout=0.0, num_layers=2, vocab_size=512, pool=pool)
    return ModelConfig.preset("tiny", **{**base, **kw})


def _batch():
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 500, size=(2, 12)).astype(np.int32)
    ids[1, 9:] = 1  # padding
    return jnp.asarray(ids), jnp.asarray((ids != 1).astype(np.int32))


@pytest.mark.parametrize("remat", ["none", "full"])
@pytest.mark.slow
def test_scan_and_loop_give_the_same_loss_and_gradients(remat):
    loop_cfg = _config(remat=remat)
    scan_cfg = dataclasses.replace(loop_cfg, scan_layers=True)
    loop_params = nn.unbox(init_params(loop_cfg, jax.random.key(1))["params"])
    scan_params = layer_stack.to_layout(loop_params, scan=True)
    ids, mask = _batch()

    def loss(cfg):
        def f(p):
            logits = XLMP(cfg).apply({"params": p}, ids, mask, deterministic=False, rngs={"dropout": jax.random.key(2)})
            return jnp.mean(jax.nn.log_softmax(logits["logits"].astype(jnp.float32))[..., :7])

        return f

    loop_loss, loop_grads = jax.jit(jax.value_and_grad(loss(loop_cfg)))(loop_params)
    scan_loss, scan_grads = jax.jit(jax.value_and_grad(loss(scan_cfg)))(scan_params)
    assert float(scan_loss) == pytest.approx(float(loop_loss), abs=1e-5)
    flat_loop = dict(jax.tree_util.tree_leaves_with_path(loop_grads))
    flat_scan = dict(jax.tree_util.tree_leaves_with_path(layer_stack.to_layout(scan_grads, scan=False)))
    assert flat_loop.keys() == flat_scan.keys()
    for path, g in flat_loop.items():
        np.testing.assert_allclose(flat_scan[path], g, atol=1e-5, err_msg=jax.tree_util.keystr(path))


@pytest.mark.slow
def test_hidden_states_match_and_shapes_are_the_stacked_loop():
    loop_cfg = _config()
    scan_cfg = dataclasses.replace(loop_cfg, scan_layers=True)
    stacked_shapes = layer_stack.to_layout(param_shapes(loop_cfg), scan=True)
    shapes = param_shapes(scan_cfg)
    assert jax.tree.map(lambda x: x.shape, shapes) == jax.tree.map(lambda x: x.shape, stacked_shapes)
    assert shapes["layers"]["layer"]["attention"]["query"]["kernel"].shape == (2, 64, 4, 16)
    params = nn.unbox(init_params(loop_cfg, jax.random.key(0))["params"])
    ids, mask = _batch()
    a = XLMP(loop_cfg).apply({"params": params}, ids, mask, output_hidden_states=True)
    b = XLMP(scan_cfg).apply({"params": layer_stack.to_layout(params, True)}, ids, mask, output_hidden_states=True)
    assert len(a["all_hidden_states"]) == len(b["all_hidden_states"]) == 3
    for x, y in zip(a["all_hidden_states"], b["all_hidden_states"], strict=True):
        np.testing.assert_allclose(y, x, atol=1e-5)


def test_round_trip_and_optimizer_state():
    import optax

    params = {"embeddings": {"w": np.ones(3)}, **{f"layer_{i}": {"k": np.full((2, 2), i)} for i in range(4)}}
    stacked = layer_stack.stack(params)
    assert stacked["layers"]["layer"]["k"].shape == (4, 2, 2) and "layer_0" not in stacked
    back = layer_stack.unstack(stacked)
    assert jax.tree.all(jax.tree.map(np.array_equal, back, params))
    state = optax.adamw(1e-3).init(jax.tree.map(jnp.asarray, params))
    converted = layer_stack.to_layout(state, scan=True)
    assert converted[0].mu["layers"]["layer"]["k"].shape == (4, 2, 2)


def test_bad_trees_are_named():
    with pytest.raises(ValueError, match="layer_0 .. layer_1"):
        layer_stack.stack({"layer_0": {"k": np.ones(1)}, "layer_2": {"k": np.ones(1)}})
    with pytest.raises(ValueError, match="no layers/layer"):
        layer_stack.unstack({"layer_0": {}})
    with pytest.raises(ValueError, match="scan_layers"):
        ModelConfig(scan_layers="yes")


def test_transformers_export_and_import_go_through_the_loop_form():
    from xlmp_jax.hf import names

    loop_cfg = _config()
    scan_cfg = dataclasses.replace(loop_cfg, scan_layers=True)
    params = random_params(loop_cfg)  # NumPy of the model's shapes: the layouts are under test, not the init
    state = names.to_hf_state_dict(params, loop_cfg)
    from_scan = names.to_hf_state_dict(layer_stack.to_layout(params, True), scan_cfg)
    assert state.keys() == from_scan.keys()
    assert all(np.array_equal(state[k], from_scan[k]) for k in state)
    imported = names.from_hf_state_dict(state, scan_cfg, pool_params=params["pool"])
    assert imported["layers"]["layer"]["output"]["kernel"].shape == (2, 256, 64)
