"""The encoder against transformers' XLMRobertaForMaskedLM, parameter counts, logical axes, bad input."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from xlmp_jax import convert
from xlmp_jax.model import SIZES, XLMP, ModelConfig, count_params, init_params
from xlmp_jax.pool import PoolConfig

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Быстрая коричневая лиса прыгает через ленивую собаку.",
    "الثعلب البني السريع يقفز فوق الكلب الكسول.",
    "敏捷的棕色狐狸跳过了懒狗。",
    "कृपया अपना पासवर्ड दर्ज करें।",
]


def hf_config(vocab_size: int, **overrides) -> transformers.XLMRobertaConfig:
    values = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=130,
        type_vocab_size=1,
        layer_norm_eps=1e-5,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )
    values.update(overrides)
    return transformers.XLMRobertaConfig(**values)


def our_config(hf: transformers.XLMRobertaConfig, **overrides) -> ModelConfig:
    values = dict(
        vocab_size=hf.vocab_size,
        hidden_size=hf.hidden_size,
        num_layers=hf.num_hidden_layers,
        num_heads=hf.num_attention_heads,
        intermediate_size=hf.intermediate_size,
        max_position_embeddings=hf.max_position_embeddings,
        type_vocab_size=hf.type_vocab_size,
        layer_norm_eps=hf.layer_norm_eps,
        pool=None,
    )
    values.update(overrides)
    return ModelConfig(**values)


@pytest.fixture(scope="module")
def real_batch(sample_vocab):
    """A padded batch of real sentences in six scripts, tokenized with the shipped vocabulary."""
    rows = [sample_vocab.encode_with_specials(s) for s in SENTENCES]
    length = max(map(len, rows))
    ids = np.full((len(rows), length), sample_vocab.pad_id, np.int32)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
    assert (ids == sample_vocab.pad_id).any(), "the batch must be padded"
    return ids


@pytest.fixture(scope="module")
def hf_model(sample_vocab):
    torch.manual_seed(0)
    model = transformers.XLMRobertaForMaskedLM(hf_config(sample_vocab.vocab_size))
    return model.eval()


@pytest.mark.parametrize("attention", ["fused", "explicit"])
def test_logits_match_transformers(hf_model, real_batch, attention):
    cfg = our_config(hf_model.config, attention=attention)
    params = convert.from_hf_state_dict(hf_model.state_dict(), cfg)
    mask = (real_batch != 1).astype(np.int32)
    ours = XLMP(cfg).apply({"params": params}, jnp.asarray(real_batch), jnp.asarray(mask))
    with torch.no_grad():
        ref = hf_model(
            input_ids=torch.from_numpy(real_batch).long(), attention_mask=torch.from_numpy(mask).long()
        ).logits.numpy()
    got = np.asarray(ours["logits"])
    assert got.shape == ref.shape
    real = mask.astype(bool)  # pads' logits are meaningless in both
    assert np.abs(got - ref)[real].max() <= 1e-5
    assert np.abs(got - ref).max() <= 1e-4


def test_sparse_head_equals_dense_head(hf_model, real_batch):
    cfg = our_config(hf_model.config)
    params = {"params": convert.from_hf_state_dict(hf_model.state_dict(), cfg)}
    ids = jnp.asarray(real_batch)
    dense = XLMP(cfg).apply(params, ids)["logits"]
    picks = jnp.array([[1, 3], [2, 2], [1, 4], [5, 1], [0, 2], [3, 1]])
    sparse = XLMP(cfg).apply(params, ids, mlm_positions=picks)["logits"]
    np.testing.assert_allclose(sparse, jnp.take_along_axis(dense, picks[..., None], axis=1), atol=1e-6)


def test_conversion_round_trips(hf_model):
    cfg = our_config(hf_model.config)
    state = {k: v.numpy() for k, v in hf_model.state_dict().items()}
    back = convert.to_hf_state_dict(convert.from_hf_state_dict(state, cfg), cfg)
    assert set(back) == set(state)
    for key, value in state.items():
        np.testing.assert_array_equal(back[key], value, err_msg=key)


def test_conversion_names_missing_key(hf_model):
    cfg = our_config(hf_model.config)
    state = dict(hf_model.state_dict())
    del state["roberta.encoder.layer.1.output.dense.weight"]
    with pytest.raises(ValueError, match=r"roberta\.encoder\.layer\.1\.output\.dense\.weight"):
        convert.from_hf_state_dict(state, cfg)


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


def test_bf16_compute_keeps_fp32_params_and_tracks_fp32():
    cfg32 = ModelConfig.preset("tiny", hidden_dropout=0.0, attention_dropout=0.0)
    cfg16 = ModelConfig.preset("tiny", dtype="bfloat16")
    variables = init_params(cfg32, jax.random.key(1))
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(nn.unbox(variables)))
    ids = jax.random.randint(jax.random.key(2), (2, 16), 4, cfg32.vocab_size - 1)
    out32 = XLMP(cfg32).apply(variables, ids)["logits"]
    out16 = XLMP(cfg16).apply(variables, ids)["logits"]
    assert out16.dtype == jnp.bfloat16
    rel = jnp.linalg.norm(out16.astype(jnp.float32) - out32) / jnp.linalg.norm(out32)
    assert rel < 0.05


# -- bad input -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    cfg = ModelConfig.preset("tiny")
    return cfg, init_params(cfg, jax.random.key(0))


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
    out = XLMP(baseline).apply(init_params(baseline, jax.random.key(0)), ids)
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
