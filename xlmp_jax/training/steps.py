"""The jit-compiled, sharded train and eval steps (see ARCHITECTURE.md).

The parts live next door: the train state in ``state``, the optimizer in ``optim``, the losses in ``losses``, the batch reshaping in
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
  diversity losses (``xlmp_jax.model.prompt_pool``), each a mean over the batch's non-empty rows, are added to what is
  minimised with their weights; they are logged on their own (``pool_key_loss``, ``pool_diversity_loss``)
  and never enter ``loss`` / ``objective`` (the MLM figures). With both weights 0 the step is the MLM-only one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding

from data_pipelines.batch_format import max_predictions, pad_rows
from xlmp_jax.model.model_config import ModelConfig
from xlmp_jax.model.xlmp import XLMP
from xlmp_jax.run_config import RunConfig
from xlmp_jax.training import losses, optim
from xlmp_jax.training import sharding as sh
from xlmp_jax.training.batching import gather_predictions, micro_batches
from xlmp_jax.training.optim import Optimizer
from xlmp_jax.training.state import TrainState
from xlmp_jax.training.step_metrics import batch_sums, finalize, pool_sums


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


def _pool_terms(cfg: ModelConfig, params: Any, outputs: dict, batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """The pool's enabled losses on ``batch`` (``losses.pool_terms``); none without a pool."""
    if cfg.pool is None:
        return {}
    return losses.pool_terms(cfg.pool, params["pool"]["keys"], outputs["pool"], batch["attention_mask"])


def make_train_step(
    run: RunConfig,
    optimizer: Optimizer,
    mesh: Mesh,
    state_shardings: TrainState,
    *,
    num_languages: int,
    frozen_groups: frozenset[str] = frozenset(),
    compiler_options: dict[str, Any] | None = None,
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """The jitted train step ``step(state, batch) -> (state, metrics)``; ``state`` is donated.

    ``frozen_groups`` (``optimizer.frozen_groups(update)``): parameter groups that do not move in the updates
    this step serves; no weight gradients are computed for them (the trainer builds one step per phase).
    ``batch`` holds global arrays laid out by ``sharding.shard_batch`` (the batch format of data_pipelines/README.md);
    ``optimizer`` is the one the state was created with (``optim.make_optimizer(run.train)``); the run's fit to
    ``mesh`` was checked by ``sharding.check_fits``.
    Metrics (replicated): ``loss`` (mean cross-entropy), ``objective`` (with smoothing/z-loss),
    ``mlm_accuracy``, ``num_predictions``, ``grad_norm`` (before clipping), ``learning_rate`` (of this
    update; with parameter groups also ``learning_rate/<group>``), ``skipped`` (1 if this step was skipped), ``nan_streak``; per language (arrays of
    ``num_languages``): ``lang_loss_sum``, ``lang_correct_sum``, ``lang_count``; with a pool:
    ``pool_usage`` [M], ``pool_usage_entropy``, ``pool_example_entropy``, ``pool_lang_weights`` [L, M],
    ``lang_examples`` [L], and ``pool_key_loss`` / ``pool_diversity_loss`` when their weights are > 0;
    and the raw sums (``nll_sum``, ...) for aggregation over steps.
    ``compiler_options`` go to ``jax.jit`` (tests use a low XLA optimisation level to compile fast).
    """
    cfg, train = run.model, run.train
    model = XLMP(cfg)
    tx = optimizer.tx
    labels = optimizer.labels(state_shardings.params)
    accum, mlm_rate, languages = train.grad_accum_steps, run.data.mlm_rate, num_languages
    smoothing, z_loss = train.label_smoothing, train.z_loss
    micro_sharding = NamedSharding(mesh, jax.sharding.PartitionSpec(None, sh.BATCH_AXES))
    rules = run.mesh.logical_rules
    logits_sharding = sh.logits_sharding(mesh, rules)

    def loss_fn(params, micro, rng, total, rows):
        params = optim.stop_frozen(params, labels, frozen_groups)
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
        pool = _pool_terms(cfg, params, outputs, micro)
        if pool:
            micro_rows = losses.real_rows(micro["attention_mask"])
            sums.update(pool_sums(pool, micro_rows))
            loss = loss + losses.pool_objective(cfg.pool, pool, micro_rows) / rows
        return loss, sums

    grad_fn = jax.grad(loss_fn, has_aux=True)

    def step_fn(state: TrainState, batch: dict[str, jax.Array]) -> tuple[TrainState, dict]:
        with sh.activation_rules(mesh, rules):
            num_predictions = max_predictions(batch["input_ids"].shape[1], mlm_rate)
            batch = gather_predictions(batch, num_predictions)
            total = jnp.maximum(jnp.sum(batch["mlm_weights"]), 1.0)
            rows = jnp.maximum(losses.real_rows(batch["attention_mask"]), 1.0)
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
                skipped=bad,
                nan_streak=new_state.nan_streak,
                **optim.learning_rates(optimizer, state.step - state.skipped),
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
    model_config: ModelConfig,
    mlm_rate: float,
    mesh: Mesh,
    state_shardings: TrainState,
    *,
    num_languages: int,
    rules: sh.Rules | None = None,
    compiler_options: dict[str, Any] | None = None,
) -> Callable[[Any, Mapping[str, Any]], dict]:
    """``eval_step(state_or_params, batch) -> metrics``: deterministic (no dropout), nothing donated.

    Returns additive sums (``nll_sum``, ``correct_sum``, ``num_predictions``, ``lang_loss_sum``,
    ``lang_correct_sum``, ``lang_count``, pool sums) to add over an eval set, plus this batch's
    ``loss`` and ``mlm_accuracy``. A host (NumPy) batch whose row count the data-parallel size does not
    divide (an eval set's last batch) is padded with rows that carry no predictions. ``rules``: the run's
    logical-axis rules (``run.mesh.logical_rules``; left out, the default).
    """
    cfg, languages = model_config, num_languages
    model = XLMP(cfg)
    dp = sh.data_parallel_size(mesh)

    def eval_fn(params, batch):
        with sh.activation_rules(mesh, rules):
            batch = gather_predictions(batch, max_predictions(batch["input_ids"].shape[1], mlm_rate))
            outputs = _apply_model(model, params, batch, None)
            outputs["logits"] = jax.lax.with_sharding_constraint(outputs["logits"], sh.logits_sharding(mesh, rules))
            terms = losses.mlm_loss(
                outputs["logits"], batch["mlm_targets"], batch["mlm_weights"], vocab_size=cfg.vocab_size
            )
            sums = batch_sums(terms, batch, outputs, languages)
            sums.update(pool_sums(_pool_terms(cfg, params, outputs, batch), losses.real_rows(batch["attention_mask"])))
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

    eval_step.lower = jitted.lower  # (params, batch) as shapes: xlmp_jax.aot compiles the step without data
    return eval_step
