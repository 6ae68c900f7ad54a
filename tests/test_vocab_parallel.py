"""Vocabulary padding and the vocabulary-split MLM head/loss under tensor parallelism.

A vocabulary of 1500 (padded to 1536, 36 padding columns) on the 8 CPU devices of conftest: train steps
with label smoothing and z-loss on tensor-parallel meshes match one device per leaf; the compiled step
never materialises a [B, K, Vp] block on a device; padding never wins and carries no probability.
"""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    FAST,
    LANGS,
    B,
    T,
    init_state,
    leaf_errors,
    mesh_of,
    model_of,
    tiny_config,
    train_step_of,
)

from data_pipelines.batch_format import max_predictions
from xlmp_jax import config_utils
from xlmp_jax.model.model_config import ModelConfig
from xlmp_jax.model.vocab_padding import pad_vocab
from xlmp_jax.model.xlmp import XLMP, init_params
from xlmp_jax.training import losses
from xlmp_jax.training import sharding as sh

VOCAB = 1500  # padded to 1536 = 12 x 128: 192 columns per device on 8 tensor shards, 384 on 4
STEPS = 3
TOLERANCE = 1e-5  # max|d| / max|ref| per leaf, as tests/test_sharding.py
MESHES = {"(1,1,8)": (1, 1, 8), "(1,2,4)": (1, 2, 4)}


def vocab_config():
    config = tiny_config(label_smoothing=0.1, z_loss=1e-3)
    config.model.vocab_size = VOCAB
    config.model.num_heads = 8  # heads and MLP split 8 ways too
    return config


def make_batch(seed: int) -> dict[str, np.ndarray]:
    """Padded rows, <= K predictions each, targets over the whole vocabulary (every shard holds some)."""
    rng = np.random.default_rng(seed)
    k = max_predictions(T, 0.15)
    ids = rng.integers(5, VOCAB - 1, (B, T)).astype(np.int32)
    ids[:, 1] = VOCAB - 2  # the last real column, next to the padding
    lengths = rng.integers(T // 2, T + 1, B)
    mask = (np.arange(T)[None] < lengths[:, None]).astype(np.int32)
    ids = np.where(mask == 1, ids, 1).astype(np.int32)
    weights = np.zeros((B, T), np.float32)
    for r in range(B):
        chosen = rng.choice(np.arange(2, lengths[r] - 1), size=rng.integers(1, k), replace=False)
        weights[r, [1, *chosen]] = 1.0
    return dict(
        input_ids=np.where(weights > 0, VOCAB - 1, ids).astype(np.int32),
        attention_mask=mask,
        positions=np.where(mask == 1, np.cumsum(mask, axis=1) + 1, 1).astype(np.int32),
        targets=np.where(weights > 0, ids, 0).astype(np.int32),
        weights=weights,
        language=rng.integers(0, LANGS, B).astype(np.int32),
    )


def _mesh(shape):
    return sh.make_mesh(mesh_of(**dict(zip(sh.MESH_AXES, shape, strict=True))), jax.devices()[: int(np.prod(shape))])


def _train(config, shape, params0) -> dict:
    mesh = _mesh(shape)
    state, shardings = init_state(config, mesh, jax.random.key(0), params=params0, compiler_options=FAST)
    train_step = train_step_of(config, mesh, shardings, num_languages=LANGS, compiler_options=FAST)
    losses = []
    for i in range(STEPS):
        state, metrics = train_step(state, sh.shard_batch(make_batch(i), mesh))
        losses.append(float(metrics["loss"]))
    return dict(losses=losses, params=jax.device_get(state.params), metrics=jax.device_get(metrics))


@pytest.fixture(scope="module")
def runs():
    config = vocab_config()
    state, _ = init_state(config, _mesh((1, 1, 1)), jax.random.key(0), compiler_options=FAST)
    params0 = jax.device_get(state.params)
    out = {name: _train(config, shape, params0) for name, shape in {"1 device": (1, 1, 1), **MESHES}.items()}
    out["initial"] = dict(params=params0)
    return out


@pytest.mark.parametrize("name", list(MESHES))
@pytest.mark.slow
def test_vocab_split_steps_equal_one_device(runs, name):
    ref, run = runs["1 device"], runs[name]
    assert np.isfinite(ref["losses"]).all()
    np.testing.assert_allclose(run["losses"], ref["losses"], rtol=TOLERANCE)
    errors = leaf_errors(run, ref)
    assert max(errors.values()) <= TOLERANCE, sorted(errors.items(), key=lambda kv: -kv[1])[:3]
    for key in ("objective", "mlm_accuracy", "grad_norm", "lang_loss_sum"):
        np.testing.assert_allclose(run["metrics"][key], ref["metrics"][key], rtol=1e-4, atol=1e-6, err_msg=key)


@pytest.mark.slow
def test_padding_rows_stay_zero_and_real_rows_train(runs):
    cfg = model_of(vocab_config())
    start, end = runs["initial"]["params"], runs["(1,1,8)"]["params"]
    for params in (start, end):
        assert params["embeddings"]["word_embeddings"].shape[0] == cfg.padded_vocab_size == 1536
        assert not params["embeddings"]["word_embeddings"][VOCAB:].any()
        assert not params["lm_head"]["bias"][VOCAB:].any()
    moved = np.abs(end["lm_head"]["bias"][:VOCAB] - start["lm_head"]["bias"][:VOCAB]).max()
    assert moved > 1e-5


# --- the compiled step: logits split, never gathered --------------------------------------------

_SHAPE = re.compile(r"\b(?:f32|bf16|f16)\[([\d,]*)\]")


def _shapes(hlo: str) -> list[tuple[int, ...]]:
    return [tuple(int(d) for d in m.group(1).split(",") if d) for m in _SHAPE.finditer(hlo)]


def _all_gather_results(hlo: str) -> list[tuple[int, ...]]:
    out = []
    for line in hlo.splitlines():
        if re.search(r"\ball-gather(-start)?\(", line):
            out += _shapes(line.split("=", 1)[1].split("all-gather", 1)[0])
    return out


def compiled_step_hlo(config, shape) -> str:
    mesh = _mesh(shape)
    state, shardings = init_state(config, mesh, jax.random.key(0), compiler_options=FAST)
    step = train_step_of(config, mesh, shardings, num_languages=LANGS, compiler_options=FAST)
    batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in make_batch(0).items()}
    return step.lower(state, batch).compile().as_text()


def check_logits_split(hlo: str, tensor: int) -> None:
    """No all-gather returns a [..., Vp] buffer; no per-device buffer holds K x Vp logits; [.., K, Vp/t] exist."""
    padded, k = 1536, max_predictions(T, 0.15)
    gathered = [s for s in _all_gather_results(hlo) if s and s[-1] == padded]
    assert not gathered, f"all-gathers over the whole vocabulary: {gathered}"
    shapes = _shapes(hlo)
    whole = [s for s in shapes if s and s[-1] == padded and int(np.prod(s)) >= k * padded]
    assert not whole, f"[.., Vp] logits-sized buffers on a device: {sorted(set(whole))}"
    split = [s for s in shapes if len(s) >= 2 and s[-1] == padded // tensor and int(np.prod(s[:-1])) % k == 0]
    assert split, f"no [.., K, {padded // tensor}] logits shard in the compiled step"


@pytest.mark.parametrize("name", list(MESHES))
def test_compiled_step_keeps_the_vocabulary_split(name):
    check_logits_split(compiled_step_hlo(vocab_config(), MESHES[name]), MESHES[name][2])


def test_the_hlo_check_catches_gathered_logits(monkeypatch):
    """The check fails when the loss's logits are gathered over the vocabulary (the former layout)."""
    mesh_whole = lambda mesh, rules=None: jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(sh.BATCH_AXES))  # noqa: E731
    monkeypatch.setattr(sh, "logits_sharding", mesh_whole)
    with pytest.raises(AssertionError, match="whole vocabulary|logits-sized"):
        check_logits_split(compiled_step_hlo(vocab_config(), (1, 1, 8)), 8)


# --- padding: never the max, no probability, no gradient ----------------------------------------


def test_loss_ignores_padding_columns():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(3, 5, 10)).astype(np.float32)
    padding = np.full((3, 5, 6), 50.0, np.float32)  # far above every real logit
    logits = jnp.asarray(np.concatenate([real, padding], axis=-1))
    targets = jnp.asarray(rng.integers(0, 10, (3, 5)), jnp.int32)
    weights = jnp.asarray(rng.integers(0, 2, (3, 5)), jnp.float32)
    for smoothing, z in ((0.0, 0.0), (0.1, 1e-3)):
        padded = losses.mlm_loss(logits, targets, weights, label_smoothing=smoothing, z_loss=z, vocab_size=10)
        ref = losses.mlm_loss(jnp.asarray(real), targets, weights, label_smoothing=smoothing, z_loss=z)
        for key in ("nll", "objective", "correct", "loss"):
            np.testing.assert_allclose(padded[key], ref[key], rtol=1e-6, atol=1e-6, err_msg=key)
        log_p = jax.nn.log_softmax(np.asarray(real), axis=-1)
        want = -np.take_along_axis(np.asarray(log_p), np.asarray(targets)[..., None], -1)[..., 0]
        np.testing.assert_allclose(ref["nll"], want, rtol=1e-6)
        np.testing.assert_array_equal(ref["correct"], np.argmax(real, -1) == np.asarray(targets))
    grad = jax.grad(lambda x: losses.mlm_loss(x, targets, weights, label_smoothing=0.1, vocab_size=10)["loss"])(logits)
    assert not np.asarray(grad)[..., 10:].any() and np.abs(np.asarray(grad)[..., :10]).max() > 0
    with pytest.raises(ValueError, match="vocab_size=17"):
        losses.mlm_loss(logits, targets, weights, vocab_size=17)


def test_model_masks_padding_even_with_large_padding_weights():
    cfg = ModelConfig.preset("tiny", vocab_size=250, pool=None, hidden_dropout=0.0, attention_dropout=0.0)
    assert cfg.padded_vocab_size == 256
    params = jax.tree.map(np.array, nn.unbox(init_params(cfg, jax.random.key(0))["params"]))
    params["lm_head"]["bias"][250:] = 1e4  # padding that would win every argmax if it were not masked
    ids = jax.random.randint(jax.random.key(1), (2, 12), 4, 249)
    logits = np.asarray(XLMP(cfg).apply({"params": params}, ids)["logits"])
    assert logits.shape == (2, 12, 256)
    assert (logits[..., 250:] == np.finfo(np.float32).min).all()
    assert (np.argmax(logits, -1) < 250).all()
    probs = np.asarray(jax.nn.softmax(logits, axis=-1))
    assert not probs[..., 250:].any() and np.allclose(probs.sum(-1), 1.0)


def test_fresh_params_have_zero_padding_and_pad_vocab_adds_it():
    cfg = ModelConfig.preset("tiny", vocab_size=250, pool=None)
    params = jax.tree.map(np.array, nn.unbox(init_params(cfg, jax.random.key(0))["params"]))
    emb = params["embeddings"]["word_embeddings"]
    assert emb.shape == (256, 64) and not emb[250:].any() and emb[:250].std() > 0
    unpadded = {**params, "embeddings": {**params["embeddings"], "word_embeddings": emb[:250]}}
    unpadded["lm_head"] = {**params["lm_head"], "bias": params["lm_head"]["bias"][:250]}
    again = pad_vocab(cfg, unpadded)
    np.testing.assert_array_equal(again["embeddings"]["word_embeddings"], emb)
    np.testing.assert_array_equal(again["lm_head"]["bias"], params["lm_head"]["bias"])
    assert pad_vocab(cfg, params)["embeddings"]["word_embeddings"] is emb  # already padded: unchanged
    with pytest.raises(ValueError, match=r"word_embeddings has 249 rows.*vocab_size=250.*256"):
        pad_vocab(cfg, {**params, "embeddings": {**params["embeddings"], "word_embeddings": emb[:249]}})


# --- configuration errors, before anything compiles --------------------------------------------


def test_vocab_multiple_must_be_a_positive_integer():
    with pytest.raises(ValueError, match=r"model.vocab_multiple must be a positive integer, got 0"):
        ModelConfig(vocab_multiple=0)
    assert ModelConfig(vocab_size=8002, vocab_multiple=1).padded_vocab_size == 8002
    assert ModelConfig(vocab_size=250002).padded_vocab_size == 250112


def test_tensor_axis_that_does_not_divide_the_padded_vocab_is_named():
    config = vocab_config()
    config.model.vocab_multiple = 4  # 1500 is already a multiple of 4, and 1500 % 8 = 4
    mesh = _mesh((1, 1, 8))
    run = config_utils.resolve(config)
    with pytest.raises(ValueError, match=r"padded vocabulary 1500 .*vocab_multiple=4.* mesh.tensor=8"):
        sh.check_fits(run.model, run.train, mesh)  # what the trainer runs before it builds anything
