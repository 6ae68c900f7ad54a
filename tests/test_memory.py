"""The memory plan's arithmetic on the tiny config (xlmp_jax.training.memory)."""

import jax.numpy as jnp
import pytest

from configs import tiny
from xlmp_jax import config_utils
from xlmp_jax.model.model_config import ModelConfig
from xlmp_jax.model.xlmp import count_params
from xlmp_jax.training import memory


def _plan(config, num_devices):
    return memory.plan(config_utils.resolve(config), num_devices)


def _plan_report(config, num_devices):
    return memory.plan_report(config_utils.resolve(config), num_devices)


def _config(**mesh):
    config = tiny.get_config()
    config.train.batch_size = 8
    config.mesh.update(mesh)
    return config


def test_replicated_plan_counts_every_parameter_four_times():
    config = _config(data=-1, fsdp=1, tensor=1)
    p = _plan(config, 1)
    counts = count_params(ModelConfig.from_dict(config.model))
    n = counts["total"] + counts["vocab_padding"]  # the padding rows are allocated too
    assert p["params_total"] == p["params_per_device"] == n
    assert p["params"] == n * 4  # fp32 master weights
    assert p["optimizer"] == 2 * n * 4  # AdamW: two fp32 moments
    assert p["gradients"] == n * 4
    assert p["compute_weights"] == 0  # fp32 compute on a replicated mesh uses the params themselves
    fixed = p["params"] + p["optimizer"] + p["gradients"]
    assert p["total_no_remat"] == fixed + p["activations_no_remat"]
    assert p["total_remat_full"] == fixed + p["activations_remat_full"]
    assert 0 < p["activations_remat_full"] < p["activations_no_remat"]


def test_fsdp_divides_the_sharded_parameters():
    one = _plan(_config(data=1, fsdp=-1, tensor=1), 1)
    eight = _plan(_config(data=1, fsdp=-1, tensor=1), 8)
    # every weight with an 'embed' axis (all but biases of other axes) is split 8 ways
    assert one["params_per_device"] / 8 <= eight["params_per_device"] < one["params_per_device"] / 4
    assert eight["rows_per_device"] == 1 and one["rows_per_device"] == 8
    assert eight["activations_no_remat"] * 8 == pytest.approx(one["activations_no_remat"], rel=1e-9)


def test_activation_formula_and_data_parallel_rows():
    config = _config(data=-1, fsdp=1, tensor=1)
    config.model.hidden_dropout = config.model.attention_dropout = 0.1  # explicit attention + dropout masks
    p = _plan(config, 2)
    cfg = ModelConfig.from_dict(config.model)
    assert p["rows_per_device"] == 4 and p["params_per_device"] == p["params_total"]
    rows, t, k = 4, config.data.seq_length, p["head_positions"]
    s = t + cfg.pool.length
    d, f, h = cfg.hidden_size, cfg.intermediate_size, cfg.num_heads
    layer = rows * s * ((11 * d + 2 * f) * 4 + 2 * d) + rows * h * s * s * (4 + 4 + 1)  # explicit attention
    expected = cfg.num_layers * layer + rows * t * d * 8 + rows * k * (cfg.padded_vocab_size * 12 + 3 * d * 4)
    assert p["activations_no_remat"] == expected
    config.model.hidden_dropout = config.model.attention_dropout = 0.0  # fused attention keeps no S x S terms
    fused = (
        cfg.num_layers * rows * s * (11 * d + 2 * f) * 4
        + rows * t * d * 8
        + rows * k * (cfg.padded_vocab_size * 12 + 3 * d * 4)
    )
    assert _plan(config, 2)["activations_no_remat"] == fused


def test_bf16_compute_adds_a_weight_copy_and_report_mentions_terms():
    config = _config(data=-1, fsdp=1, tensor=1)
    config.model.dtype = "bfloat16"
    p = _plan(config, 1)
    assert p["compute_weights"] == p["params_total"] * jnp.dtype("bfloat16").itemsize
    text = _plan_report(config, 1)
    for word in ("params", "optimizer", "gradients", "activations", "without remat", "remat='full'", "total"):
        assert word in text


def test_bad_batch_is_a_clear_error():
    config = _config(data=-1, fsdp=1, tensor=1)
    config.train.batch_size = 6
    with pytest.raises(ValueError, match="train.batch_size=6"):
        _plan(config, 4)
