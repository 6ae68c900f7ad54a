"""Run configs (configs/*.py) and their loading/checking (xlmp_jax/config_utils.py)."""

import dataclasses
import json

import pytest

from data_pipelines.config import DataConfig
from xlmp_jax import config_utils
from xlmp_jax.model.model_config import ModelConfig
from xlmp_jax.model.xlmp import count_params
from xlmp_jax.run_config import MeshConfig, TrainConfig

NAMES = ("tiny", "base", "large", "tiny_baseline", "base_baseline", "large_baseline")
# XLM-R's published sizes (hidden, layers, heads, ffn, vocab) and parameter counts without the pool.
XLMR = {"base": (768, 12, 12, 3072, 250002, 278_295_186), "large": (1024, 24, 16, 4096, 250002, 560_142_482)}


@pytest.mark.parametrize("name", NAMES)
def test_every_config_resolves_and_builds_its_model(name):
    config = config_utils.load_config(f"configs/{name}.py")
    model = ModelConfig.from_dict(config.model)
    assert set(config.keys()) >= {"model", "data", "train", "mesh", "init_from_hf"}
    assert (model.pool is None) == name.endswith("_baseline")
    size = name.removesuffix("_baseline")
    counts = count_params(model)  # eval_shape only: nothing is allocated for base/large
    if size in XLMR:
        hidden, layers, heads, ffn, vocab, encoder_params = XLMR[size]
        assert (model.hidden_size, model.num_layers, model.num_heads, model.intermediate_size) == (
            hidden,
            layers,
            heads,
            ffn,
        )
        assert model.vocab_size == vocab and config.data.seq_length == 512
        assert counts["encoder"] == encoder_params
    else:
        assert config.data.seq_length == 128 and config.train.steps == 300 and config.train.batch_size == 32
    assert counts["pool"] == (
        0 if model.pool is None else model.pool.size * model.hidden_size * (1 + model.pool.length)
    )


@pytest.mark.parametrize("size", ("tiny", "base", "large"))
def test_baseline_differs_from_its_twin_only_by_the_pool(size):
    pooled = config_utils.load_config(f"configs/{size}.py").to_dict()
    baseline = config_utils.load_config(f"configs/{size}_baseline.py").to_dict()
    assert pooled["model"]["pool"].pop("enabled") is True
    assert baseline["model"]["pool"].pop("enabled") is False
    assert pooled == baseline


def test_overrides_and_json_round_trip(tmp_path):
    config = config_utils.load_config(
        "configs/tiny.py",
        ["--config.train.steps=70", "model.pool.size=8", "--config.model.pool.enabled=false", "train.learning_rate=2"],
    )
    assert config.train.steps == 70 and config.model.pool.size == 8 and config.model.pool.enabled is False
    assert config.train.learning_rate == 2.0 and isinstance(config.train.learning_rate, float)
    path = config_utils.save_config(config, str(tmp_path))
    assert json.load(open(path))["train"]["steps"] == 70
    again = config_utils.read_config_json(str(tmp_path))
    assert again.to_dict() == config.to_dict()
    with pytest.raises(AttributeError):  # saved configs stay locked: no new fields
        again.train.new_field = 1


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.stepz=3", 'unknown config field train.stepz (did you mean "steps"'),
        ("train.steps=abc", "--config.train.steps=abc"),
        ("model.pool.size=1.5", "--config.model.pool.size=1.5"),
        ("train.steps=0", "train.steps must be a positive integer, got 0"),
        ("mesh.fsdp=-1", "at most one mesh axis may be -1"),
        ("data.seq_length=200", "data.seq_length=200 exceeds the model's position table"),
        ("model.num_heads=5", "model.hidden_size=64 is not divisible by model.num_heads=5"),
        ("train.grad_accum_steps=3", "train.batch_size=32 is not divisible by train.grad_accum_steps=3"),
    ],
)
def test_bad_overrides_name_the_value(override, message):
    with pytest.raises(config_utils.ConfigError) as e:
        config_utils.load_config("configs/tiny.py", [override])
    assert message in str(e.value)


def test_missing_config_file_names_the_path():
    with pytest.raises(config_utils.ConfigError, match=r"config file not found: 'configs/nope\.py'"):
        config_utils.load_config("configs/nope.py")


def test_warmup_longer_than_training_is_an_error():
    with pytest.raises(config_utils.ConfigError, match="train.warmup_steps=30 exceeds train.steps=7"):
        config_utils.load_config("configs/tiny.py", ["train.steps=7"])


# ---------------------------------------------------------------------------------------------------------------
# The typed run: resolved once, the config files the only schema.


@pytest.mark.parametrize("name", NAMES + ("base_from_xlmr",))
def test_resolve_hands_typed_sections_equal_to_the_file(name):
    config = config_utils.load_config(f"configs/{name}.py")
    run = config_utils.resolve(config)
    assert isinstance(run.train, TrainConfig) and isinstance(run.mesh, MeshConfig)
    assert isinstance(run.data, DataConfig) and isinstance(run.model, ModelConfig)
    train = dataclasses.asdict(run.train)
    groups = {g.pop("name"): g for g in train.pop("param_groups")}  # a tuple of ParamGroups, named in the file
    assert train == {k: v for k, v in config.train.to_dict().items() if k != "param_groups"}
    assert groups == config.train.param_groups.to_dict()
    assert dataclasses.asdict(run.mesh) == config.mesh.to_dict()
    assert run.model == ModelConfig.from_dict(config.model) and run.init_from_hf == config.init_from_hf
    assert run.data.seq_length == config.data.seq_length and run.data.languages == tuple(config.data.languages)
    assert run.resolved is config  # what config.json holds
    assert run.train.last_step == config.train.steps


@pytest.mark.parametrize("cls", (TrainConfig, MeshConfig))
def test_typed_sections_have_no_defaults_of_their_own(cls):
    # configs/common.py is the one home of the train and mesh defaults: a field missing from a config is an error.
    fields = dataclasses.fields(cls)
    assert all(f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING for f in fields)


def test_a_field_missing_from_or_unknown_to_the_schema_is_named():
    config = config_utils.load_config("configs/tiny.py")
    with config.train.unlocked():
        config.train.stepz = 5
    with pytest.raises(config_utils.ConfigError, match=r"unknown field\(s\) train.stepz"):
        config_utils.resolve(config)
    config = config_utils.load_config("configs/tiny.py")
    with config.mesh.unlocked():
        del config.mesh["dcn_data"]
    with pytest.raises(config_utils.ConfigError, match=r"missing field\(s\) mesh.dcn_data"):
        config_utils.resolve(config)


def test_stop_after_sets_the_last_step_and_load_run_resolves():
    run = config_utils.load_run("configs/tiny.py", ["train.stop_after=40"])
    assert run.train.steps == 300 and run.train.last_step == 40
    with pytest.raises(config_utils.ConfigError, match="data.seq_length=200 exceeds the model's position table"):
        config_utils.load_run("configs/tiny.py", ["data.seq_length=200"])


def test_the_xlmr_recipe_splits_base_into_pool_and_encoder():
    from xlmp_jax.model.xlmp import param_shapes
    from xlmp_jax.training import optim

    run = config_utils.load_run("configs/base_from_xlmr.py")
    sizes = optim.group_sizes(param_shapes(run.model), run.train.param_groups)
    counts = count_params(run.model)
    assert sizes["pool"] == counts["pool"] and sizes["rest"] == 0
    assert sizes["encoder"] == counts["encoder"] + counts["vocab_padding"]  # the padding rows are parameters too
    optimizer = optim.make_optimizer(run.train)
    assert optimizer.frozen_groups(0) == {"encoder"} and optimizer.frozen_groups(2000) == set()


def test_a_config_saved_before_the_pool_training_options_loads_with_their_old_values(tmp_path):
    # The pool's training options became PoolConfig's defaults after configs were saved without them: such a
    # config.json was trained with no pool terms and prompts drawn like the keys, and reads back so
    # (PoolConfig.from_saved), while a config built today holds the new defaults.
    config = config_utils.load_config("configs/tiny.py")
    saved = json.loads(config_utils.config_to_json(config))
    for name in ("key_loss_weight", "diversity_loss_weight", "prompt_init_std"):
        del saved["model"]["pool"][name]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    pool = config_utils.resolve(config_utils.read_config_json(str(tmp_path))).model.pool
    assert (pool.key_loss_weight, pool.diversity_loss_weight, pool.prompt_init_std) == (0.0, 0.0, 0.02)
    assert (pool.size, pool.length) == (config.model.pool.size, config.model.pool.length)  # the rest as saved
    today = config_utils.resolve(config).model.pool
    assert (today.key_loss_weight, today.diversity_loss_weight, today.prompt_init_std) == (0.1, 0.1, 1.0)


def test_a_config_saved_before_the_logical_rules_loads_with_the_default_rules(tmp_path):
    # Checkpoints store their config.json; those written before mesh.logical_rules take the default
    # (run_config.ADDED_FIELDS), and one override from the command line parses and round-trips.
    from configs.common import LOGICAL_RULES

    config = config_utils.load_config("configs/tiny.py")
    saved = json.loads(config_utils.config_to_json(config))
    del saved["mesh"]["logical_rules"]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    run = config_utils.resolve(config_utils.read_config_json(str(tmp_path)))
    assert run.mesh.logical_rules == LOGICAL_RULES
    override = "mesh.logical_rules=(('batch', ('data', 'fsdp')), ('embed', None), ('vocab', 'tensor'))"
    config = config_utils.load_config("configs/tiny.py", [override])
    config_utils.save_config(config, str(tmp_path))
    run = config_utils.resolve(config_utils.read_config_json(str(tmp_path)))
    assert run.mesh.logical_rules == (("batch", ("data", "fsdp")), ("embed", None), ("vocab", "tensor"))
