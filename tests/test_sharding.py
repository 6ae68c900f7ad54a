"""Mesh construction, logical-axis shardings, batch placement, and three train steps on seven meshes.

Runs on the 8 CPU devices of conftest. Steps compile at a low XLA optimisation level (numerics are
the same; CPU compile time halves): the claim under test is that sharding does not change the maths.
"""

import types

import jax
import ml_collections
import numpy as np
import pytest
from helpers import FAST, LANGS, B, V, init_state, leaf_errors, make_batch, mesh_of, tiny_config, train_step_of
from jax.sharding import PartitionSpec as P

from configs.common import LOGICAL_RULES, logical_rules
from xlmp_jax import config_utils
from xlmp_jax.training import sharding as sh
from xlmp_jax.training.optim import make_optimizer
from xlmp_jax.training.state import abstract_train_state

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
    mesh = sh.make_mesh(mesh_of(**cfg))
    assert mesh.axis_names == ("data", "fsdp", "tensor")
    assert tuple(mesh.devices.shape) == shape
    assert sorted(d.id for d in mesh.devices.flat) == list(range(8))


def test_make_mesh_on_given_devices():
    mesh = sh.make_mesh(mesh_of(data=-1, fsdp=1, tensor=1), jax.devices()[:1])
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
        sh.make_mesh(mesh_of(**cfg))
    for word in words:
        assert word in str(err.value)


def test_multi_slice_grid_puts_slices_on_the_data_axis():
    # Stand-ins for TPU devices of 2 slices x 4 chips (only the attributes mesh_utils reads on non-TPU).
    fake = [
        types.SimpleNamespace(id=i, slice_index=i // 4, process_index=i // 4, platform="cpu", device_kind="cpu")
        for i in range(8)
    ]
    grid = sh.device_grid(mesh_of(data=1, fsdp=2, tensor=2, dcn_data=2), fake)
    assert grid.shape == (2, 2, 2)
    for s in range(2):  # each data index is one whole slice
        assert {d.slice_index for d in grid[s].flat} == {s}


def test_batch_size_checks_name_the_value():
    mesh = sh.make_mesh(mesh_of(data=2, fsdp=2, tensor=2))
    sh.check_batch_size(8, mesh)
    with pytest.raises(ValueError, match=r"train.batch_size=6 .*data-parallel size 4"):
        sh.check_batch_size(6, mesh)
    with pytest.raises(ValueError, match=r"train.batch_size=8 / train.grad_accum_steps=4 = 2 .*4"):
        sh.check_batch_size(8, mesh, grad_accum_steps=4)
    with pytest.raises(ValueError, match=r"train.batch_size=9 is not divisible by train.grad_accum_steps=2"):
        config_utils.resolve(tiny_config(batch_size=9, grad_accum_steps=2))
    run = config_utils.resolve(tiny_config(batch_size=6))
    with pytest.raises(ValueError, match="train.batch_size=6"):
        sh.check_fits(run.model, run.train, mesh)


def test_fit_spec_keeps_an_indivisible_dimension_whole():
    mesh = sh.make_mesh(mesh_of(data=1, fsdp=2, tensor=4))
    # XLM-R's vocabulary (250,002 = 2 x 125,001) cannot be split 4 ways: replicate that dimension.
    assert sh.fit_spec(P("tensor", "fsdp"), (250002, 768), mesh) == P(None, "fsdp")
    assert sh.fit_spec(P("tensor", "fsdp"), (8000, 768), mesh) == P("tensor", "fsdp")
    assert sh.fit_spec(P(("data", "fsdp")), (6,), mesh) == P(("data", "fsdp"))


def test_shard_batch_splits_rows_over_data_and_fsdp():
    mesh = sh.make_mesh(mesh_of(data=2, fsdp=2, tensor=2))
    host = make_batch(0)
    batch = sh.shard_batch(host, mesh)
    for name, value in batch.items():
        assert value.shape == host[name].shape
        assert value.sharding.spec == P(("data", "fsdp"))
        np.testing.assert_array_equal(np.asarray(value), host[name])
        assert {s.data.shape[0] for s in value.addressable_shards} == {B // 4}


# --- three train steps on seven meshes ----------------------------------------------------------

MESHES = {
    "1 device": (1, 1, 1),
    "(1,1,1)": (1, 1, 1),
    "(8,1,1)": (8, 1, 1),
    "(1,8,1)": (1, 8, 1),
    "(1,1,8)": (1, 1, 8),
    "(2,2,2)": (2, 2, 2),
    "(2,4,1)": (2, 4, 1),
    "(1,2,4)": (1, 2, 4),
}
STEPS = 3  # the first has learning rate 0 (warm-up): steps 2 and 3 move the params
TOLERANCE = 1e-5  # max|d| / max|ref| per leaf


def mesh_test_config() -> ml_collections.ConfigDict:
    """tiny_config with 8 heads: heads, MLP (64) and vocabulary (512) all divide by 8 tensor shards."""
    config = tiny_config()
    config.model.num_heads = 8
    return config


def _train(config, shape, params0, compiler_options) -> dict:
    """STEPS train steps (dropout on) from ``params0`` on a (data, fsdp, tensor) mesh of ``shape``."""
    n = int(np.prod(shape))
    mesh = sh.make_mesh(mesh_of(**dict(zip(sh.MESH_AXES, shape, strict=True))), jax.devices()[:n])
    state, shardings = init_state(config, mesh, jax.random.key(0), params=params0, compiler_options=compiler_options)
    train_step = train_step_of(config, mesh, shardings, num_languages=LANGS, compiler_options=compiler_options)
    losses = []
    for i in range(STEPS):
        state, metrics = train_step(state, sh.shard_batch(make_batch(i), mesh))
        losses.append(float(metrics["loss"]))
    return dict(losses=losses, params=jax.device_get(state.params), state=state, metrics=metrics)


@pytest.fixture(scope="module")
def runs():
    """Each mesh from the same params, plus "reduction order": one device at XLA's default optimisation
    level (other fusions, so other summation orders), the spread that no mesh can be expected to beat."""
    config = mesh_test_config()
    ref_mesh = sh.make_mesh(mesh_of(data=1, fsdp=1, tensor=1), jax.devices()[:1])
    state, _ = init_state(config, ref_mesh, jax.random.key(0), compiler_options=FAST)
    params0 = jax.device_get(state.params)
    out = {name: _train(config, shape, params0, FAST) for name, shape in MESHES.items()}
    out["reduction order"] = _train(config, (1, 1, 1), params0, None)
    out["initial params"] = dict(params=params0)
    return out


@pytest.mark.slow
def test_reduction_order_spread_is_within_the_tolerance(runs):
    spread = leaf_errors(runs["reduction order"], runs["1 device"])
    assert max(spread.values()) <= TOLERANCE, sorted(spread.items(), key=lambda kv: -kv[1])[:3]


@pytest.mark.parametrize("name", [n for n in MESHES if n != "1 device"])
@pytest.mark.slow
def test_same_steps_on_every_mesh(runs, name):
    ref, run = runs["1 device"], runs[name]
    assert np.isfinite(ref["losses"]).all()
    np.testing.assert_allclose(run["losses"], ref["losses"], rtol=TOLERANCE)
    errors = leaf_errors(run, ref)
    worst = sorted(errors.items(), key=lambda kv: -kv[1])[:3]
    assert max(errors.values()) <= TOLERANCE, worst
    for key in ("mlm_accuracy", "grad_norm", "num_predictions", "lang_loss_sum", "pool_usage"):
        np.testing.assert_allclose(run["metrics"][key], ref["metrics"][key], rtol=1e-4, atol=1e-6, err_msg=key)


@pytest.mark.slow
def test_the_steps_trained(runs):
    start = runs["initial params"]["params"]["layer_0"]["intermediate"]["kernel"]
    assert np.abs(runs["1 device"]["params"]["layer_0"]["intermediate"]["kernel"] - start).max() > 1e-5


@pytest.mark.slow
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
    assert int(state.step) == STEPS


# --- the logical-axis rules are config (mesh.logical_rules) -------------------------------------


def _param_specs(config, mesh) -> dict:
    """The params' PartitionSpecs the resolved ``config`` places on ``mesh`` (shapes only: nothing compiles)."""
    run = config_utils.resolve(config)
    _, shardings = abstract_train_state(run.model, make_optimizer(run.train).tx, mesh, run.mesh.logical_rules)
    return jax.tree.map(lambda s: s.spec, shardings.params)


def test_a_rule_overridden_in_the_config_changes_the_parameter_shardings():
    mesh = sh.make_mesh(mesh_of(data=2, fsdp=2, tensor=2))
    config = mesh_test_config()
    assert config.mesh.logical_rules == LOGICAL_RULES  # the default is today's rules
    default = _param_specs(config, mesh)
    assert default["embeddings"]["word_embeddings"] == P("tensor", "fsdp")
    assert default["layer_0"]["attention"]["query"]["kernel"] == P("fsdp", "tensor")
    config.mesh.logical_rules = logical_rules(embed=None)  # no FSDP split of the parameters
    no_fsdp = _param_specs(config, mesh)
    assert no_fsdp["embeddings"]["word_embeddings"] == P("tensor")
    assert no_fsdp["layer_0"]["attention"]["query"]["kernel"] == P(None, "tensor")
    assert no_fsdp["layer_0"]["attention"]["out"]["kernel"] == P("tensor")
    specs = jax.tree.leaves(no_fsdp, is_leaf=lambda x: isinstance(x, P))
    assert not any("fsdp" in str(spec) for spec in specs)
    # the activations' rules follow the config too: the logits keep the vocabulary whole without `vocab`
    rules = logical_rules(vocab=None)
    assert sh.logits_sharding(mesh, rules).spec == P(("data", "fsdp"), None, None)
    assert sh.logits_sharding(mesh).spec == P(("data", "fsdp"), None, "tensor")


@pytest.mark.parametrize(
    "rules, bad",
    [
        ((("embedding", "fsdp"),), "'embedding'"),  # not a name the model uses
        ((("embed", "fsbp"),), "'fsbp'"),  # not a mesh axis
        ((("batch", ("data", "model")),), "'model'"),
        ((("embed", "fsdp"), ("embed", None)), "'embed' has two rules"),
        ((("embed",),), "('embed',)"),
        ((("heads", ("tensor", "tensor")),), "twice"),
    ],
)
def test_a_bad_rule_is_refused_naming_it(rules, bad):
    config = tiny_config()
    config.mesh.logical_rules = rules
    with pytest.raises(ValueError, match="mesh.logical_rules") as err:
        config_utils.resolve(config)
    assert bad in str(err.value)
