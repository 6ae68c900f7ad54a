"""The encoder against transformers' XLMRobertaForMaskedLM, parameter counts, logical axes, bad input."""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from helpers import random_params
from hf_reference import SENTENCES, hf_config, our_config, pad_rows

from xlmp_jax.hf import names
from xlmp_jax.model.layers import Dropout, add_bias
from xlmp_jax.model.model_config import SIZES, ModelConfig
from xlmp_jax.model.prompt_pool import PoolConfig
from xlmp_jax.model.xlmp import XLMP, count_params, init_params


@pytest.fixture(scope="module")
def real_batch(sample_vocab):
    """A padded batch of real sentences in six scripts, tokenized with the shipped vocabulary."""
    ids, mask = pad_rows([sample_vocab.encode_with_specials(s) for s in SENTENCES], sample_vocab.pad_id)
    assert (mask == 0).any(), "the batch must be padded"
    return ids


@pytest.fixture(scope="module")
def hf_model(sample_vocab):
    torch.manual_seed(0)
    model = transformers.XLMRobertaForMaskedLM(hf_config(sample_vocab.vocab_size))
    return model.eval()


@pytest.mark.parametrize("attention", ["fused", "explicit"])
def test_logits_match_transformers(hf_model, real_batch, attention):
    cfg = our_config(hf_model.config, attention=attention)
    params = names.from_hf_state_dict(hf_model.state_dict(), cfg)
    mask = (real_batch != 1).astype(np.int32)
    ours = XLMP(cfg).apply({"params": params}, jnp.asarray(real_batch), jnp.asarray(mask))
    with torch.no_grad():
        ref = hf_model(
            input_ids=torch.from_numpy(real_batch).long(), attention_mask=torch.from_numpy(mask).long()
        ).logits.numpy()
    padded = np.asarray(ours["logits"])
    assert padded.shape == (*ref.shape[:-1], cfg.padded_vocab_size) and cfg.padded_vocab_size > cfg.vocab_size
    assert (padded[..., cfg.vocab_size :] == np.finfo(np.float32).min).all()  # the vocabulary padding, masked
    got = padded[..., : cfg.vocab_size]
    assert got.shape == ref.shape
    real = mask.astype(bool)  # pads' logits are meaningless in both
    assert np.abs(got - ref)[real].max() <= 1e-5
    assert np.abs(got - ref).max() <= 1e-4


@pytest.mark.slow
def test_cudnn_attention_passes_padding_as_key_lengths(hf_model, real_batch, monkeypatch):
    """attention='cudnn' (GPU only) with cuDNN swapped for XLA: same logits as the mask path."""
    calls = []
    original = jax.nn.dot_product_attention

    def on_xla(query, key, value, *args, implementation=None, **kwargs):
        calls.append((implementation, kwargs.get("key_value_seq_lengths")))
        return original(query, key, value, *args, implementation="xla", **kwargs)

    monkeypatch.setattr(jax.nn, "dot_product_attention", on_xla)
    mask = (real_batch != 1).astype(np.int32)
    cfg = our_config(hf_model.config, attention="cudnn", attention_dropout=0.0, pool=PoolConfig(size=4, length=2))
    params = XLMP(cfg).init(jax.random.key(0), jnp.asarray(real_batch), jnp.asarray(mask))["params"]
    run = functools.partial(XLMP(cfg).apply, {"params": params}, jnp.asarray(real_batch), jnp.asarray(mask))
    cudnn = run()["logits"]
    assert calls and all(impl == "cudnn" for impl, _ in calls)
    np.testing.assert_array_equal(calls[0][1], mask.sum(1) + 2)  # 2 prompt vectors + the row's tokens
    explicit = XLMP(dataclasses.replace(cfg, attention="explicit")).apply(
        {"params": params}, jnp.asarray(real_batch), jnp.asarray(mask)
    )["logits"]
    real = mask.astype(bool)
    assert np.abs(np.asarray(cudnn) - np.asarray(explicit))[real].max() <= 1e-5
    with pytest.raises(ValueError, match="model.attention_dropout"):
        our_config(hf_model.config, attention="cudnn")
    with pytest.raises(ValueError, match=r"model.hidden_dropout=1.5"):
        our_config(hf_model.config, hidden_dropout=1.5)


def test_sparse_head_equals_dense_head(hf_model, real_batch):
    cfg = our_config(hf_model.config)
    params = {"params": names.from_hf_state_dict(hf_model.state_dict(), cfg)}
    ids = jnp.asarray(real_batch)
    dense = XLMP(cfg).apply(params, ids)["logits"]
    picks = jnp.array([[1, 3], [2, 2], [1, 4], [5, 1], [0, 2], [3, 1]])
    sparse = XLMP(cfg).apply(params, ids, mlm_positions=picks)["logits"]
    np.testing.assert_allclose(sparse, jnp.take_along_axis(dense, picks[..., None], axis=1), atol=1e-6)


def test_conversion_round_trips(hf_model):
    cfg = our_config(hf_model.config)
    state = {k: v.numpy() for k, v in hf_model.state_dict().items()}
    back = names.to_hf_state_dict(names.from_hf_state_dict(state, cfg), cfg)
    assert set(back) == set(state)
    for key, value in state.items():
        np.testing.assert_array_equal(back[key], value, err_msg=key)


def test_conversion_names_missing_key(hf_model):
    cfg = our_config(hf_model.config)
    state = dict(hf_model.state_dict())
    del state["roberta.encoder.layer.1.output.dense.weight"]
    with pytest.raises(ValueError, match=r"roberta\.encoder\.layer\.1\.output\.dense\.weight"):
        names.from_hf_state_dict(state, cfg)


@pytest.mark.parametrize("size", sorted(SIZES))
def test_param_counts_match_transformers(size):
    ours = ModelConfig.preset(size, pool=None)
    ref_cfg = hf_config(
        ours.vocab_size,
        hidden_size=ours.hidden_size,
        num_hidden_layers=ours.num_layers,
        num_attention_heads=ours.num_heads,
        intermediate_size=ours.intermediate_size,
        max_position_embeddings=ours.max_position_embeddings,
    )
    with torch.device("meta"):
        ref = transformers.XLMRobertaForMaskedLM(ref_cfg).num_parameters()
    assert count_params(ours)["total"] == ref
    with_pool = count_params(ModelConfig.preset(size))
    assert with_pool["encoder"] == ref
    assert with_pool["pool"] == 256 * (4 + 1) * ours.hidden_size


def test_base_preset_is_xlmr_base():
    cfg = ModelConfig.preset("base", pool=None)
    assert count_params(cfg)["total"] == 278_295_186  # xlm-roberta-base's published 278M


KNOWN_AXES = {None, "vocab", "embed", "embed_out", "mlp", "heads", "kv", "prompts", "prompt_length"}


def test_every_param_has_logical_axes():
    cfg = ModelConfig.preset("tiny")
    variables = jax.eval_shape(lambda: init_params(cfg, jax.random.key(0)))
    specs = nn.get_partition_spec(variables)["params"]
    shapes = nn.unbox(variables)["params"]
    flat_specs = jax.tree_util.tree_leaves_with_path(specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
    assert len(flat_specs) == len(jax.tree.leaves(shapes))
    for path, spec in flat_specs:
        assert isinstance(spec, jax.sharding.PartitionSpec), path
        assert set(spec) <= KNOWN_AXES, (path, spec)
        assert any(axis is not None for axis in spec) or "position" in str(path) or "token_type" in str(path), path
    assert specs["embeddings"]["word_embeddings"] == jax.sharding.PartitionSpec("vocab", "embed")
    assert specs["pool"]["prompts"] == jax.sharding.PartitionSpec("prompts", "prompt_length", "embed")
    assert specs["layer_0"]["attention"]["query"]["kernel"] == jax.sharding.PartitionSpec("embed", "heads", "kv")


@pytest.mark.slow
def test_bf16_compute_keeps_fp32_params_and_tracks_fp32():
    cfg32 = ModelConfig.preset("tiny", hidden_dropout=0.0, attention_dropout=0.0)
    cfg16 = ModelConfig.preset("tiny", dtype="bfloat16")
    variables = init_params(cfg32, jax.random.key(1))
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(nn.unbox(variables)))
    ids = jax.random.randint(jax.random.key(2), (2, 16), 4, cfg32.vocab_size - 1)
    out32 = XLMP(cfg32).apply(variables, ids)["logits"][..., : cfg32.vocab_size]  # padding: each dtype's lowest
    out16 = XLMP(cfg16).apply(variables, ids)["logits"][..., : cfg32.vocab_size]
    assert out16.dtype == jnp.bfloat16
    rel = jnp.linalg.norm(out16.astype(jnp.float32) - out32) / jnp.linalg.norm(out32)
    assert rel < 0.05


# -- bad input -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    cfg = ModelConfig.preset("tiny")
    return cfg, {"params": random_params(cfg)}  # NumPy of the model's shapes: no init compiled


def test_id_outside_vocabulary_is_named(tiny):
    cfg, variables = tiny
    ids = np.array([[0, 5, cfg.vocab_size + 7, 2]])
    with pytest.raises(ValueError, match=rf"token id {cfg.vocab_size + 7} is outside the vocabulary"):
        XLMP(cfg).apply(variables, ids)
    with pytest.raises(ValueError, match="token id -3"):
        XLMP(cfg).apply(variables, np.array([[0, -3, 2]]))


def test_too_long_sequence_is_named(tiny):
    cfg, variables = tiny
    ids = np.full((1, cfg.max_length + 1), 5)
    with pytest.raises(ValueError, match=rf"sequence length {cfg.max_length + 1} exceeds the position table"):
        XLMP(cfg).apply(variables, ids)
    XLMP(cfg).apply(variables, ids[:, :-1])  # the longest allowed input runs


def test_all_padding_row_is_defined(tiny):
    cfg, variables = tiny
    ids = np.array([[0, 5, 6, 2], [1, 1, 1, 1]])
    out = XLMP(cfg).apply(variables, ids)
    assert np.isfinite(np.asarray(out["logits"])).all()
    weights = np.asarray(out["pool"]["weights"])
    np.testing.assert_allclose(weights[1], np.full(cfg.pool.size, 1 / cfg.pool.size), rtol=1e-5)
    baseline = ModelConfig.preset("tiny", pool=None)
    out = XLMP(baseline).apply({"params": random_params(baseline)}, ids)
    assert np.isfinite(np.asarray(out["logits"])).all()


@pytest.mark.parametrize("field,value", [("size", 0), ("length", -1), ("size", 2.5), ("temperature", 0.0)])
def test_bad_pool_config_is_named(field, value):
    with pytest.raises(ValueError, match=rf"model\.pool\.{field}"):
        PoolConfig(**{field: value})


def test_bad_model_config_fields_are_named():
    with pytest.raises(ValueError, match=r"model\.num_heads"):
        ModelConfig.preset("tiny", num_heads=5)
    with pytest.raises(ValueError, match=r"model\.hidden_sise"):
        ModelConfig.from_dict({"hidden_sise": 3})
    with pytest.raises(ValueError, match=r"model\.pool\.sizee"):
        ModelConfig.from_dict({"pool": {"sizee": 3}})
    assert ModelConfig.from_dict({"pool": {"enabled": False}}).pool is None


@pytest.mark.parametrize("bias_dtype", [jnp.float32, jnp.bfloat16])
def test_add_bias_gradient_equals_the_plain_sum(bias_dtype):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, 3, 7)), jnp.float32)
    bias = jnp.asarray(rng.normal(size=(7,)), bias_dtype)
    cotangent = jnp.asarray(rng.normal(size=(2, 3, 7)), jnp.float32)

    def plain(x, b):
        return jnp.sum((x + b.astype(x.dtype)) * cotangent)

    def ours(x, b):
        return jnp.sum(add_bias(x, b) * cotangent)

    np.testing.assert_array_equal(add_bias(x, bias), x + bias.astype(jnp.float32))
    (gx, gb), (rx, rb) = jax.grad(ours, (0, 1))(x, bias), jax.grad(plain, (0, 1))(x, bias)
    assert gb.dtype == bias_dtype
    np.testing.assert_allclose(gx, rx)
    np.testing.assert_allclose(np.float32(gb), np.float32(rb), rtol=1e-2 if bias_dtype == jnp.bfloat16 else 1e-6)


@pytest.mark.parametrize("shape", [(64, 128, 96), (64, 128, 97)])  # even last axis: 16-bit draws; odd: 32-bit
def test_dropout_drops_at_its_rate_and_keeps_the_expectation(shape):
    x = jnp.ones(shape, jnp.float32)
    layer = Dropout(0.1)
    out = layer.apply({}, x, False, rngs={"dropout": jax.random.key(0)})
    dropped = float(jnp.mean(out == 0))
    assert abs(dropped - 0.1) < 3e-3, dropped  # 786k draws: a 3e-3 window is > 8 sigma
    np.testing.assert_allclose(float(jnp.mean(out)), 1.0, atol=1e-2)
    np.testing.assert_allclose(np.unique(np.asarray(out)), [0.0, 1.0 / (1.0 - 6554 / 2**16)], rtol=1e-6)
    again = layer.apply({}, x, False, rngs={"dropout": jax.random.key(1)})
    assert float(jnp.mean((out == 0) & (again == 0))) < 0.02  # independent masks for different keys
    assert layer.apply({}, x, True) is x
