"""Helpers shared by several test modules: the repository root, and a tiny config and batch for step tests.

Not a test module (pytest collects nothing here); the test files import it as ``helpers`` (``tests/`` is on
``sys.path`` under pytest's default import mode).
"""

import pathlib

import jax
import ml_collections
import numpy as np

from data_pipelines.config import default_data_config, max_predictions

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
