"""Train state and the jit-compiled, sharded train/eval steps (see ARCHITECTURE.md).

The parts live next door: the optimizer in ``optim``, the losses in ``losses``, the batch reshaping in
``batching``, the returned sums and metrics in ``step_metrics``, the activation layout in ``sharding``.

* Precision: master params (and so grads and Adam moments) in ``model.param_dtype`` (fp32); the
  model computes in ``model.dtype`` (bf16 on accelerators); the loss is always fp32.
* Sparse LM head: each row has at most K = ``max_predictions(T, mlm_rate)`` selected positions; the
  step gathers them with ``top_k(weights, K)`` and runs the 250k-vocabulary head only there.
* Gradient accumulation: an explicit ``lax.scan`` over ``train.grad_accum_steps`` micro-batches that
  sums per-token losses and divides once by the batch's total number of predictions. This is exactly
  the gradient of the whole batch (``optax.MultiSteps`` would average per-micro-batch means, which
  weights tokens unevenly when micro-batches hold different numbers of predictions).
* NaN/Inf: a step whose loss or gradient norm is not finite leaves params and optimizer state as they
  were (``lax.cond``), increments ``nan_streak`` and ``skipped``; the loop stops after
  ``train.max_consecutive_nan`` in a row. ``step`` always advances (it counts batches consumed); the
  learning-rate schedule follows the optimizer's own count of applied updates (``step - skipped``).
* Pool terms: with ``model.pool.key_loss_weight`` / ``diversity_loss_weight`` > 0, the key-matching and
  diversity losses (``xlmp_jax.pool``), each a mean over the batch's non-empty rows, are added to what is
  minimised with their weights; they are logged on their own (``pool_key_loss``, ``pool_diversity_loss``)
  and never enter ``loss`` / ``objective`` (the MLM figures). With both weights 0 the step is the MLM-only one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.sharding import Mesh, NamedSharding

from data_pipelines.config import max_predictions
from xlmp_jax import losses
from xlmp_jax import sharding as sh
from xlmp_jax.batching import gather_predictions, micro_batches, pad_rows
from xlmp_jax.model import XLMP, init_params
from xlmp_jax.model_config import ModelConfig
from xlmp_jax.optim import make_optimizer
from xlmp_jax.step_metrics import add_pool_sums, batch_sums, finalize, real_rows

# Per-language metric arrays are this long unless config.data.languages lists the languages
# (() means "every language of the source", unknown before the data is opened). CC-100 has 116.
DEFAULT_MAX_LANGUAGES = 128


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


def _get(cfg: Any, name: str, default: Any = None) -> Any:
    if isinstance(cfg, Mapping):
        return cfg.get(name, default)
    return getattr(cfg, name, default)


def model_config(config: Any) -> ModelConfig:
    """``config.model`` (a ConfigDict, dict or ModelConfig) as a ModelConfig."""
    model = config.model if not isinstance(config, ModelConfig) else config
    return model if isinstance(model, ModelConfig) else ModelConfig.from_dict(model)


def _as_key_data(rng: Any) -> jax.Array:
    if isinstance(rng, (int, np.integer)):
        rng = jax.random.key(int(rng))
    if jnp.issubdtype(jnp.asarray(rng).dtype, jax.dtypes.prng_key):
        rng = jax.random.key_data(rng)
    return jnp.asarray(rng, jnp.uint32)


def create_train_state(
    config: Any, mesh: Mesh, rng: Any, *, params: Any = None, compiler_options: dict[str, Any] | None = None
) -> tuple[TrainState, TrainState]:
    """A fresh TrainState, initialised under jit directly into its shards, and its NamedShardings.

    Params and the Adam moments are sharded by ``sharding.LOGICAL_RULES`` (FSDP over ``embed``, tensor
    parallel over heads/mlp/vocab); scalars are replicated. ``params`` (an unboxed tree, e.g. imported
    from transformers) replaces the random init; the optimizer state is then built from it.
    """
    cfg = model_config(config)
    check_mesh(cfg, mesh)
    tx = make_optimizer(config.train).tx
    key = _as_key_data(rng)

    def init(key_data):
        param_key, state_key = jax.random.split(jax.random.wrap_key_data(key_data))
        boxed = init_params(cfg, param_key)["params"]
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=boxed,
            opt_state=tx.init(boxed),
            rng=jax.random.key_data(state_key),
            nan_streak=jnp.zeros((), jnp.int32),
            skipped=jnp.zeros((), jnp.int32),
        )

    # Traced without the rules context: the out_shardings place every leaf, and flax would otherwise
    # constrain DenseGeneral's flat kernel (before its reshape) with the 3-D kernel's axis names.
    abstract = jax.eval_shape(init, key)
    shardings = sh.logical_shardings(abstract, mesh)
    if params is None:
        init_fn = jax.jit(lambda k: nn.unbox(init(k)), out_shardings=shardings, compiler_options=compiler_options)
        return init_fn(key), shardings
    expected = jax.tree.structure(shardings.params)
    if jax.tree.structure(params) != expected:
        raise ValueError("the given params do not have the structure of the model's (config.model) params")
    for (path, x), want in zip(
        jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(nn.unbox(abstract.params)), strict=True
    ):
        if tuple(np.shape(x)) != tuple(want.shape):
            name = jax.tree_util.keystr(path)
            raise ValueError(
                f"param {name} has shape {tuple(np.shape(x))}, the model (config.model) needs {want.shape}"
            )
    placed = jax.tree.map(lambda x, s: jax.device_put(x, s), params, shardings.params)

    def build(p, key_data):
        state_key = jax.random.split(jax.random.wrap_key_data(key_data))[1]
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=jax.tree.map(lambda x, a: x.astype(a.dtype), p, nn.unbox(abstract.params)),
            opt_state=tx.init(p),
            rng=jax.random.key_data(state_key),
            nan_streak=jnp.zeros((), jnp.int32),
            skipped=jnp.zeros((), jnp.int32),
        )

    state = jax.jit(build, out_shardings=shardings, compiler_options=compiler_options)(placed, key)
    return state, shardings


def _num_languages(config: Any, num_languages: int | None) -> int:
    if num_languages is not None:
        return int(num_languages)
    data = _get(config, "data", None)
    languages = _get(data, "languages", ()) if data is not None else ()
    return len(languages) if languages else DEFAULT_MAX_LANGUAGES


def _apply_model(model: XLMP, params: Any, batch: Mapping[str, jax.Array], rng: jax.Array | None) -> dict:
    return model.apply(
        {"params": params},
        batch["input_ids"],
        batch["attention_mask"],
        batch["positions"],
        batch.get("token_type_ids"),
        mlm_positions=batch["mlm_positions"],
        deterministic=rng is None,
        rngs=None if rng is None else {"dropout": rng},
    )


def check_mesh(cfg: ModelConfig, mesh: Mesh) -> None:
    """Raises a ValueError, before anything compiles, unless the mesh splits the padded vocabulary evenly."""
    sh.check_vocab_split(cfg.vocab_size, cfg.vocab_multiple, cfg.padded_vocab_size, mesh)


def make_train_step(
    config: Any,
    mesh: Mesh,
    state_shardings: TrainState,
    *,
    num_languages: int | None = None,
    compiler_options: dict[str, Any] | None = None,
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """The jitted train step ``step(state, batch) -> (state, metrics)``; ``state`` is donated.

    ``batch`` holds global arrays laid out by ``sharding.shard_batch`` (the batch format of data_pipelines/README.md).
    Metrics (replicated): ``loss`` (mean cross-entropy), ``objective`` (with smoothing/z-loss),
    ``mlm_accuracy``, ``num_predictions``, ``grad_norm`` (before clipping), ``learning_rate`` (of this
    update), ``skipped`` (1 if this step was skipped), ``nan_streak``; per language (arrays of
    ``num_languages``): ``lang_loss_sum``, ``lang_correct_sum``, ``lang_count``; with a pool:
    ``pool_usage`` [M], ``pool_usage_entropy``, ``pool_example_entropy``, ``pool_lang_weights`` [L, M],
    ``lang_examples`` [L], and ``pool_key_loss`` / ``pool_diversity_loss`` when their weights are > 0;
    and the raw sums (``nll_sum``, ...) for aggregation over steps.
    ``num_languages`` defaults to ``len(config.data.languages)`` (or ``DEFAULT_MAX_LANGUAGES``);
    ``compiler_options`` go to ``jax.jit`` (tests use a low XLA optimisation level to compile fast).
    """
    cfg = model_config(config)
    check_mesh(cfg, mesh)
    model = XLMP(cfg)
    train = config.train
    tx, schedule = make_optimizer(train)
    accum = int(_get(train, "grad_accum_steps", 1) or 1)
    mlm_rate = float(config.data.mlm_rate)
    smoothing = float(_get(train, "label_smoothing", 0.0) or 0.0)
    z_loss = float(_get(train, "z_loss", 0.0) or 0.0)
    languages = _num_languages(config, num_languages)
    batch_size = _get(train, "batch_size", None)
    if batch_size is not None:
        sh.check_batch_size(int(batch_size), mesh, accum)
    micro_sharding = NamedSharding(mesh, jax.sharding.PartitionSpec(None, sh.BATCH_AXES))
    logits_sharding = sh.logits_sharding(mesh)

    def loss_fn(params, micro, rng, total, rows):
        outputs = _apply_model(model, params, micro, rng)
        outputs["logits"] = jax.lax.with_sharding_constraint(outputs["logits"], logits_sharding)
        terms = losses.mlm_loss(
            outputs["logits"],
            micro["mlm_targets"],
            micro["mlm_weights"],
            label_smoothing=smoothing,
            z_loss=z_loss,
            vocab_size=cfg.vocab_size,
        )
        sums = batch_sums(terms, micro, outputs, languages)
        loss = sums["objective_sum"] / total
        if cfg.pool is not None and (cfg.pool.key_loss_weight > 0 or cfg.pool.diversity_loss_weight > 0):
            loss = loss + add_pool_sums(cfg, params, outputs, micro, sums) / rows
        return loss, sums

    grad_fn = jax.grad(loss_fn, has_aux=True)

    def step_fn(state: TrainState, batch: dict[str, jax.Array]) -> tuple[TrainState, dict]:
        with sh.activation_rules(mesh):
            num_predictions = max_predictions(batch["input_ids"].shape[1], mlm_rate)
            batch = gather_predictions(batch, num_predictions)
            total = jnp.maximum(jnp.sum(batch["mlm_weights"]), 1.0)
            rows = jnp.maximum(real_rows(batch), 1.0)
            rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
            if accum == 1:
                grads, sums = grad_fn(state.params, batch, rng, total, rows)
            else:
                micro = jax.lax.with_sharding_constraint(micro_batches(batch, accum), micro_sharding)

                def body(carry, inputs):
                    index, mb = inputs
                    g, s = grad_fn(state.params, mb, jax.random.fold_in(rng, index), total, rows)
                    return jax.tree.map(jnp.add, carry, (g, s)), None

                zero = jax.eval_shape(
                    lambda: grad_fn(state.params, jax.tree.map(lambda x: x[0], micro), rng, total, rows)
                )
                zero = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), zero)
                (grads, sums), _ = jax.lax.scan(body, zero, (jnp.arange(accum), micro))
            grad_norm = optax.global_norm(grads)
            finite = jnp.isfinite(sums["objective_sum"]) & jnp.isfinite(grad_norm)

            def apply(_):
                updates, opt_state = tx.update(grads, state.opt_state, state.params)
                return optax.apply_updates(state.params, updates), opt_state

            params, opt_state = jax.lax.cond(finite, apply, lambda _: (state.params, state.opt_state), None)
            lr = schedule(state.step - state.skipped)
            bad = (~finite).astype(jnp.int32)
            new_state = state.replace(
                step=state.step + 1,
                params=params,
                opt_state=opt_state,
                nan_streak=(state.nan_streak + 1) * bad,
                skipped=state.skipped + bad,
            )
            metrics = finalize(sums)
            metrics.update(
                grad_norm=grad_norm,
                learning_rate=jnp.asarray(lr, jnp.float32),
                skipped=bad,
                nan_streak=new_state.nan_streak,
            )
            return new_state, metrics

    return jax.jit(
        step_fn,
        in_shardings=(state_shardings, sh.batch_sharding(mesh)),
        out_shardings=(state_shardings, sh.replicated(mesh)),
        donate_argnums=(0,),
        compiler_options=compiler_options,
    )


def make_eval_step(
    config: Any,
    mesh: Mesh,
    state_shardings: TrainState,
    *,
    num_languages: int | None = None,
    compiler_options: dict[str, Any] | None = None,
) -> Callable[[Any, Mapping[str, Any]], dict]:
    """``eval_step(state_or_params, batch) -> metrics``: deterministic (no dropout), nothing donated.

    Returns additive sums (``nll_sum``, ``correct_sum``, ``num_predictions``, ``lang_loss_sum``,
    ``lang_correct_sum``, ``lang_count``, pool sums) to add over an eval set, plus this batch's
    ``loss`` and ``mlm_accuracy``. A host (NumPy) batch whose row count the data-parallel size does not
    divide (an eval set's last batch) is padded with rows that carry no predictions.
    """
    cfg = model_config(config)
    check_mesh(cfg, mesh)
    model = XLMP(cfg)
    mlm_rate = float(config.data.mlm_rate)
    languages = _num_languages(config, num_languages)
    dp = sh.data_parallel_size(mesh)

    def eval_fn(params, batch):
        with sh.activation_rules(mesh):
            batch = gather_predictions(batch, max_predictions(batch["input_ids"].shape[1], mlm_rate))
            outputs = _apply_model(model, params, batch, None)
            outputs["logits"] = jax.lax.with_sharding_constraint(outputs["logits"], sh.logits_sharding(mesh))
            terms = losses.mlm_loss(
                outputs["logits"], batch["mlm_targets"], batch["mlm_weights"], vocab_size=cfg.vocab_size
            )
            sums = batch_sums(terms, batch, outputs, languages)
            add_pool_sums(cfg, params, outputs, batch, sums)
            return finalize(sums)

    jitted = jax.jit(
        eval_fn,
        in_shardings=(state_shardings.params, sh.batch_sharding(mesh)),
        out_shardings=sh.replicated(mesh),
        compiler_options=compiler_options,
    )

    def eval_step(state_or_params: Any, batch: Mapping[str, Any]) -> dict:
        params = state_or_params.params if isinstance(state_or_params, TrainState) else state_or_params
        if not isinstance(next(iter(batch.values())), jax.Array):
            rows = len(next(iter(batch.values())))
            extra = -rows % dp if jax.process_count() == 1 else 0
            batch = sh.shard_batch(pad_rows(batch, rows + extra, model.config.pad_token_id), mesh)
        return jitted(params, batch)

    return eval_step
