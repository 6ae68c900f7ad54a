"""Helpers shared by several test modules: the repository root, and a tiny config and batch for step tests.

Not a test module (pytest collects nothing here); the test files import it as ``helpers`` (``tests/`` is on
``sys.path`` under pytest's default import mode).
"""

import pathlib

import jax
import ml_collections
import numpy as np

from configs.common import LOGICAL_RULES, mesh_config, train_config
from data_pipelines.batch_format import max_predictions
from data_pipelines.config import default_data_config
from xlmp_jax import config_utils
from xlmp_jax.model import xlmp
from xlmp_jax.model.model_config import ModelConfig
from xlmp_jax.run_config import MeshConfig
from xlmp_jax.training.optim import make_optimizer
from xlmp_jax.training.state import create_train_state
from xlmp_jax.training.steps import make_eval_step, make_train_step

REPO = pathlib.Path(__file__).resolve().parents[1]  # the repository root: cwd and PYTHONPATH of CLI subprocesses

# Steps compile at a low XLA optimisation level: the numerics are the same, CPU compile time halves.
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
    c.train = train_config(
        **{**dict(steps=20, batch_size=B, learning_rate=1e-3, warmup_steps=2, grad_clip=1.0), **train}
    )
    c.mesh = mesh_config()
    c.init_from_hf = ""
    return c


def mesh_of(**axes: int) -> MeshConfig:
    """``MeshConfig`` of the given axes (``dcn_data`` 1 unless given)."""
    return MeshConfig(**{"dcn_data": 1, "logical_rules": LOGICAL_RULES, **axes})


def init_state(config: ml_collections.ConfigDict, mesh, rng, **kwargs):
    """``state.create_train_state`` for a test's ConfigDict: resolved, with the optimizer of its train block."""
    run = config_utils.resolve(config)
    return create_train_state(
        run.model, make_optimizer(run.train).tx, mesh, rng, rules=run.mesh.logical_rules, **kwargs
    )


def train_step_of(config: ml_collections.ConfigDict, mesh, shardings, **kwargs):
    """``steps.make_train_step`` for a test's ConfigDict (the optimizer built as ``init_state`` builds it)."""
    run = config_utils.resolve(config)
    return make_train_step(run, make_optimizer(run.train), mesh, shardings, **kwargs)


def eval_step_of(config: ml_collections.ConfigDict, mesh, shardings, **kwargs):
    """``steps.make_eval_step`` for a test's ConfigDict."""
    run = config_utils.resolve(config)
    return make_eval_step(run.model, run.data.mlm_rate, mesh, shardings, rules=run.mesh.logical_rules, **kwargs)


def model_of(config: ml_collections.ConfigDict) -> ModelConfig:
    return config_utils.resolve(config).model


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


# Per-leaf comparison of a run against a reference (the mesh-exactness tests).
FLOOR = 1e-3  # the denominator's least value: the attention key bias has a zero gradient and stays ~0


def leaf_errors(run: dict, ref: dict) -> dict[str, float]:
    """max|d| / max(max|ref|, FLOOR) for every parameter."""
    errors = {}
    for (path, a), b in zip(
        jax.tree_util.tree_leaves_with_path(ref["params"]), jax.tree.leaves(run["params"]), strict=True
    ):
        errors[jax.tree_util.keystr(path)] = float(np.abs(a - b).max() / max(np.abs(a).max(), FLOOR))
    return errors


def random_params(config: ModelConfig, seed: int = 0) -> dict:
    """Random params of the right shapes (NumPy; no compilation), every weight non-trivial: a test with
    zero biases, unit LayerNorms or a near-uniform pool would prove little."""
    rng = np.random.RandomState(seed)

    def leaf(path, shape):
        name = jax.tree_util.keystr(path)
        if "scale" in name:
            return (1 + rng.normal(0, 0.1, shape.shape)).astype(np.float32)
        std = 1.0 if "pool" in name else 0.05  # keys spread like real queries, prompts as large as embeddings
        return rng.normal(0, std, shape.shape).astype(np.float32)

    return jax.tree_util.tree_map_with_path(leaf, xlmp.param_shapes(config))
