"""Mesh construction, logical-axis shardings, batch placement, and one train step on four meshes.

Runs on the 8 CPU devices of conftest. Steps compile at a low XLA optimisation level (numerics are
the same; CPU compile time halves): the claim under test is that sharding does not change the maths.
"""

import types

import jax
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from data_pipelines.config import default_data_config, max_predictions
from xlmp_jax import sharding as sh
from xlmp_jax import steps

FAST = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
B, T, V, LANGS = 8, 16, 512, 3


def tiny_config(**train) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model = ml_collections.ConfigDict(
        dict(
            vocab_size=V,
            hidden_size=32,
            num_layers=2,
            num_heads=4,
            intermediate_size=64,
            max_position_embeddings=T + 4,
            hidden_dropout=0.1,
            attention_dropout=0.0,
            pool=dict(enabled=True, size=8, length=2),
        )
    )
    c.data = default_data_config()
    c.data.seq_length = T
    c.train = ml_collections.ConfigDict(
        dict(
            steps=20,
            batch_size=B,
            learning_rate=1e-3,
            warmup_steps=2,
            weight_decay=0.01,
            b1=0.9,
            b2=0.98,
            eps=1e-6,
            grad_clip=1.0,
            grad_accum_steps=1,
            label_smoothing=0.0,
            z_loss=0.0,
        )
    )
    c.train.update(train)
    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1, dcn_data=1))
    return c


def make_batch(seed: int, rows: int = B) -> dict[str, np.ndarray]:
    """A batch in the data pipeline's format: padded rows, <= K selected positions per row."""
    rng = np.random.default_rng(seed)
    k = max_predictions(T, 0.15)
    ids = rng.integers(5, V, (rows, T)).astype(np.int32)
    lengths = rng.integers(T // 2, T + 1, rows)
    mask = (np.arange(T)[None] < lengths[:, None]).astype(np.int32)
    ids = np.where(mask == 1, ids, 1).astype(np.int32)
    positions = np.where(mask == 1, np.cumsum(mask, axis=1) + 1, 1).astype(np.int32)
    weights = np.zeros((rows, T), np.float32)
    for r in range(rows):
        chosen = rng.choice(np.arange(1, lengths[r] - 1), size=rng.integers(1, k + 1), replace=False)
        weights[r, chosen] = 1.0
    targets = np.where(weights > 0, ids, 0).astype(np.int32)
    inputs = np.where(weights > 0, V - 1, ids).astype(np.int32)  # <mask>
    language = rng.integers(0, LANGS, rows).astype(np.int32)
    return dict(
        input_ids=inputs,
        attention_mask=mask,
        positions=positions,
        targets=targets,
        weights=weights,
        language=language,
    )


# --- mesh ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cfg, shape",
    [
        (dict(data=-1, fsdp=1, tensor=1), (8, 1, 1)),
        (dict(data=2, fsdp=-1, tensor=1), (2, 4, 1)),
        (dict(data=2, fsdp=2, tensor=2), (2, 2, 2)),
        (dict(data=1, fsdp=1, tensor=-1), (1, 1, 8)),
    ],
)
def test_make_mesh_shapes(cfg, shape):
    mesh = sh.make_mesh(cfg)
    assert mesh.axis_names == ("data", "fsdp", "tensor")
    assert tuple(mesh.devices.shape) == shape
    assert sorted(d.id for d in mesh.devices.flat) == list(range(8))


def test_make_mesh_on_given_devices():
    mesh = sh.make_mesh(dict(data=-1, fsdp=1, tensor=1), jax.devices()[:1])
    assert mesh.devices.shape == (1, 1, 1)


@pytest.mark.parametrize(
    "cfg, words",
    [
        (dict(data=3, fsdp=1, tensor=1), ["mesh.data=3", "3 devices", "8"]),
        (dict(data=3, fsdp=-1, tensor=1), ["mesh.data=3", "device count 8"]),
        (dict(data=-1, fsdp=-1, tensor=1), ["mesh.data", "mesh.fsdp", "only one"]),
        (dict(data=0, fsdp=1, tensor=1), ["mesh.data", "0"]),
        (dict(data=-1, fsdp=1, tensor=1, dcn_data=3), ["mesh.dcn_data=3", "8"]),
        (dict(data=-1, fsdp=1, tensor=1, dcn_data=2), ["mesh.dcn_data=2", "1 slice"]),
    ],
)
def test_make_mesh_errors_name_the_value(cfg, words):
    with pytest.raises(ValueError) as err:
        sh.make_mesh(cfg)
    for word in words:
        assert word in str(err.value)


def test_multi_slice_grid_puts_slices_on_the_data_axis():
    # Stand-ins for TPU devices of 2 slices x 4 chips (only the attributes mesh_utils reads on non-TPU).
    fake = [
        types.SimpleNamespace(id=i, slice_index=i // 4, process_index=i // 4, platform="cpu", device_kind="cpu")
        for i in range(8)
    ]
    grid = sh.device_grid(dict(data=1, fsdp=2, tensor=2, dcn_data=2), fake)
    assert grid.shape == (2, 2, 2)
    for s in range(2):  # each data index is one whole slice
        assert {d.slice_index for d in grid[s].flat} == {s}


def test_batch_size_checks_name_the_value():
    mesh = sh.make_mesh(dict(data=2, fsdp=2, tensor=2))
    sh.check_batch_size(8, mesh)
    with pytest.raises(ValueError, match=r"train.batch_size=6 .*data-parallel size 4"):
        sh.check_batch_size(6, mesh)
    with pytest.raises(ValueError, match=r"train.batch_size=8 / train.grad_accum_steps=4 = 2 .*4"):
        sh.check_batch_size(8, mesh, grad_accum_steps=4)
    with pytest.raises(ValueError, match=r"train.batch_size=9 is not divisible by train.grad_accum_steps=2"):
        sh.check_batch_size(9, mesh, grad_accum_steps=2)
    with pytest.raises(ValueError, match="train.batch_size=6"):
        steps.make_train_step(tiny_config(batch_size=6), mesh, None)


def test_fit_spec_keeps_an_indivisible_dimension_whole():
    mesh = sh.make_mesh(dict(data=1, fsdp=2, tensor=4))
    # XLM-R's vocabulary (250,002 = 2 x 125,001) cannot be split 4 ways: replicate that dimension.
    assert sh.fit_spec(P("tensor", "fsdp"), (250002, 768), mesh) == P(None, "fsdp")
    assert sh.fit_spec(P("tensor", "fsdp"), (8000, 768), mesh) == P("tensor", "fsdp")
    assert sh.fit_spec(P(("data", "fsdp")), (6,), mesh) == P(("data", "fsdp"))


def test_shard_batch_splits_rows_over_data_and_fsdp():
    mesh = sh.make_mesh(dict(data=2, fsdp=2, tensor=2))
    host = make_batch(0)
    batch = sh.shard_batch(host, mesh)
    for name, value in batch.items():
        assert value.shape == host[name].shape
        assert value.sharding.spec == P(("data", "fsdp"))
        np.testing.assert_array_equal(np.asarray(value), host[name])
        assert {s.data.shape[0] for s in value.addressable_shards} == {B // 4}


# --- one train step on four meshes ---------------------------------------------------------------

MESHES = {
    "1 device": (dict(data=1, fsdp=1, tensor=1), 1),
    "(8,1,1)": (dict(data=8, fsdp=1, tensor=1), 8),
    "(2,4,1)": (dict(data=2, fsdp=4, tensor=1), 8),
    "(2,2,2)": (dict(data=2, fsdp=2, tensor=2), 8),
}


@pytest.fixture(scope="module")
def runs():
    """Two train steps (dropout on) from the same params on each mesh: losses, final params, final state."""
    config = tiny_config()
    ref_mesh = sh.make_mesh(MESHES["1 device"][0], jax.devices()[:1])
    state, _ = steps.create_train_state(config, ref_mesh, jax.random.key(0), compiler_options=FAST)
    params0 = jax.device_get(state.params)
    out = {"initial params": params0}
    for name, (mesh_cfg, n) in MESHES.items():
        mesh = sh.make_mesh(mesh_cfg, jax.devices()[:n])
        state, shardings = steps.create_train_state(
            config, mesh, jax.random.key(0), params=params0, compiler_options=FAST
        )
        train_step = steps.make_train_step(config, mesh, shardings, num_languages=LANGS, compiler_options=FAST)
        losses = []
        for i in range(2):
            state, metrics = train_step(state, sh.shard_batch(make_batch(i), mesh))
            losses.append(float(metrics["loss"]))
        out[name] = dict(losses=losses, params=jax.device_get(state.params), state=state, metrics=metrics)
    return out


def test_same_step_on_every_mesh(runs):
    ref = runs["1 device"]
    assert np.isfinite(ref["losses"]).all()
    for name, run in runs.items():
        if name == "initial params":
            continue
        np.testing.assert_allclose(run["losses"], ref["losses"], rtol=1e-5, err_msg=name)
        jax.tree.map(
            lambda a, b, name=name: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=name),
            run["params"],
            ref["params"],
        )
        for key in ("mlm_accuracy", "grad_norm", "num_predictions", "lang_loss_sum", "pool_usage"):
            np.testing.assert_allclose(run["metrics"][key], ref["metrics"][key], rtol=1e-4, atol=1e-6, err_msg=key)
    # the steps really trained: params moved from where they started
    start = runs["initial params"]["layer_0"]["intermediate"]["kernel"]
    assert np.abs(ref["params"]["layer_0"]["intermediate"]["kernel"] - start).max() > 1e-5


def test_params_and_optimizer_state_are_sharded(runs):
    state = runs["(2,2,2)"]["state"]
    params = state.params
    assert params["embeddings"]["word_embeddings"].sharding.spec == P("tensor", "fsdp")
    assert params["layer_0"]["attention"]["query"]["kernel"].sharding.spec == P("fsdp", "tensor")
    assert params["layer_0"]["attention"]["out"]["kernel"].sharding.spec == P("tensor", None, "fsdp")
    assert params["layer_1"]["intermediate"]["kernel"].sharding.spec == P("fsdp", "tensor")
    assert params["layer_1"]["output"]["kernel"].sharding.spec == P("tensor", "fsdp")
    emb = params["embeddings"]["word_embeddings"]
    assert {s.data.shape for s in emb.addressable_shards} == {(V // 2, 32 // 2)}  # 1/4 of the table per device
    adam = [s for s in jax.tree.leaves(state.opt_state, is_leaf=lambda x: hasattr(x, "mu")) if hasattr(s, "mu")]
    assert adam, "no Adam state found"
    mu = adam[0].mu["embeddings"]["word_embeddings"]
    assert mu.sharding.spec == P("tensor", "fsdp")
    assert state.step.sharding.spec == P()
    assert int(state.step) == 2
