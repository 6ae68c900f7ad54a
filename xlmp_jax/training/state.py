"""The train state: what a step changes, created under jit straight into its shards.

Apart from the steps (``xlmp_jax.training.steps``) because the trainer builds it before any step exists: from a
random init, from imported params (``init_from_hf``), or only abstractly, as the target a checkpoint is
restored into (then nothing is initialised and thrown away).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.sharding import Mesh

from xlmp_jax.model.model_config import ModelConfig
from xlmp_jax.model.xlmp import init_params
from xlmp_jax.training import sharding as sh


class TrainState(struct.PyTreeNode):
    """Everything a step changes, all ``jax.Array``s (so Orbax saves it as one tree).

    ``rng`` is raw ``uint32`` key data (checkpoint-friendly); dropout keys fold in the step.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array
    nan_streak: jax.Array  # consecutive non-finite steps up to now
    skipped: jax.Array  # non-finite steps skipped in total


def _as_key_data(rng: Any) -> jax.Array:
    if isinstance(rng, (int, np.integer)):
        rng = jax.random.key(int(rng))
    if jnp.issubdtype(jnp.asarray(rng).dtype, jax.dtypes.prng_key):
        rng = jax.random.key_data(rng)
    return jnp.asarray(rng, jnp.uint32)


def _split(key_data: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(param key, state key): how a run's seed is spent, shared by the init and ``initial_params``."""
    param_key, state_key = jax.random.split(jax.random.wrap_key_data(key_data))
    return param_key, state_key


def _initializer(model: ModelConfig, tx: optax.GradientTransformation):
    """``init(key_data) -> TrainState`` with boxed (logically named) params: the random start."""

    def init(key_data):
        param_key, state_key = _split(key_data)
        boxed = init_params(model, param_key)["params"]
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=boxed,
            opt_state=tx.init(boxed),
            rng=jax.random.key_data(state_key),
            nan_streak=jnp.zeros((), jnp.int32),
            skipped=jnp.zeros((), jnp.int32),
        )

    return init


def initial_params(model: ModelConfig, seed: int) -> Any:
    """The unboxed params a random-init run of ``model`` with ``train.seed = seed`` starts from, rebuilt
    from the config and seed alone: the evals read "the model at step 0" without a step-0 checkpoint. (A run
    with ``init_from_hf`` starts from its import instead.)"""
    param_key, _ = _split(_as_key_data(jax.random.key(seed)))
    return jax.jit(lambda k: nn.unbox(init_params(model, k)["params"]))(param_key)


def abstract_train_state(
    model: ModelConfig, tx: optax.GradientTransformation, mesh: Mesh, rules: sh.Rules | None = None
) -> tuple[Any, TrainState]:
    """The state's shapes as ``ShapeDtypeStruct``s carrying their shardings (a restore target; nothing is
    computed), and the NamedShardings themselves, placed by the logical-axis ``rules`` (``run.mesh.logical_rules``;
    left out, the default)."""
    # Traced without the rules context: the shardings place every leaf, and flax would otherwise
    # constrain DenseGeneral's flat kernel (before its reshape) with the 3-D kernel's axis names.
    key_data = jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0)))
    boxed = jax.eval_shape(_initializer(model, tx), key_data)
    shardings = sh.logical_shardings(boxed, mesh, rules)
    abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), nn.unbox(boxed), shardings)
    return abstract, shardings


def create_train_state(
    model: ModelConfig,
    tx: optax.GradientTransformation,
    mesh: Mesh,
    rng: Any,
    *,
    params: Any = None,
    rules: sh.Rules | None = None,
    compiler_options: dict[str, Any] | None = None,
) -> tuple[TrainState, TrainState]:
    """A fresh TrainState, initialised under jit directly into its shards, and its NamedShardings.

    Params and the Adam moments (``tx``'s state) are sharded by the logical-axis ``rules`` (``run.mesh.logical_rules``;
    the default: FSDP over ``embed``, tensor parallel over heads/mlp/vocab); scalars are replicated. ``params`` (an unboxed tree,
    e.g. imported from transformers) replaces the random init; the optimizer state is then built from it.
    """
    key = _as_key_data(rng)
    abstract, shardings = abstract_train_state(model, tx, mesh, rules)
    if params is None:
        init = _initializer(model, tx)
        init_fn = jax.jit(lambda k: nn.unbox(init(k)), out_shardings=shardings, compiler_options=compiler_options)
        return init_fn(key), shardings
    expected = jax.tree.structure(shardings.params)
    if jax.tree.structure(params) != expected:
        raise ValueError("the given params do not have the structure of the model's (config.model) params")
    for (path, x), want in zip(
        jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(abstract.params), strict=True
    ):
        if tuple(np.shape(x)) != tuple(want.shape):
            name = jax.tree_util.keystr(path)
            raise ValueError(
                f"param {name} has shape {tuple(np.shape(x))}, the model (config.model) needs {want.shape}"
            )
    placed = jax.tree.map(lambda x, s: jax.device_put(x, s), params, shardings.params)

    def build(p, key_data):
        state_key = _split(key_data)[1]
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=jax.tree.map(lambda x, a: x.astype(a.dtype), p, abstract.params),
            opt_state=tx.init(p),
            rng=jax.random.key_data(state_key),
            nan_streak=jnp.zeros((), jnp.int32),
            skipped=jnp.zeros((), jnp.int32),
        )

    state = jax.jit(build, out_shardings=shardings, compiler_options=compiler_options)(placed, key)
    return state, shardings
