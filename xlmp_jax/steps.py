"""Train state, optimizer and the jit-compiled, sharded train/eval steps (see ARCHITECTURE.md).

* Optimizer: global-norm clipping, then AdamW with XLM-R's betas (0.9, 0.98), eps 1e-6 and weight
  decay 0.01 on weight matrices, embeddings and the pool's keys/prompts, not on biases or LayerNorm
  scales; learning rate: linear warm-up from 0, then linear decay to 0 at ``train.steps``.
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

import contextlib
import functools
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
from xlmp_jax import sharding as sh
from xlmp_jax.model import XLMP, ModelConfig, init_params
from xlmp_jax.pool import PoolConfig, diversity_loss, key_matching_loss

# Per-language metric arrays are this long unless config.data.languages lists the languages
# (() means "every language of the source", unknown before the data is opened). CC-100 has 116.
DEFAULT_MAX_LANGUAGES = 128
NO_DECAY = ("bias", "scale")  # parameter names without weight decay (biases, LayerNorm scales)


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


def make_schedule(train_cfg: Any) -> optax.Schedule:
    """Linear warm-up 0 -> ``learning_rate`` over ``warmup_steps``, then linear decay to 0 at ``steps``."""
    lr = float(train_cfg.learning_rate)
    steps, warmup = int(train_cfg.steps), int(train_cfg.warmup_steps)
    if lr < 0:
        raise ValueError(f"train.learning_rate must be >= 0, got {lr}")
    if not 0 <= warmup <= steps:
        raise ValueError(f"train.warmup_steps={warmup} must be in [0, train.steps={steps}]")
    decay = optax.linear_schedule(lr, 0.0, max(steps - warmup, 1))
    if warmup == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), decay], [warmup])


def decay_mask(params: Any) -> Any:
    """True for the parameters that get weight decay: all but biases and LayerNorm scales."""

    def keep(path, _):
        names = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]
        return names[-1] not in NO_DECAY

    return jax.tree_util.tree_map_with_path(keep, params)


def make_optimizer(train_cfg: Any) -> optax.GradientTransformation:
    """Global-norm clipping (``grad_clip`` > 0), then AdamW on ``make_schedule``."""
    parts = []
    clip = float(_get(train_cfg, "grad_clip", 0.0) or 0.0)
    if clip < 0:
        raise ValueError(f"train.grad_clip must be >= 0 (0 = off), got {clip}")
    if clip > 0:
        parts.append(optax.clip_by_global_norm(clip))
    parts.append(
        optax.adamw(
            make_schedule(train_cfg),
            b1=float(_get(train_cfg, "b1", 0.9)),
            b2=float(_get(train_cfg, "b2", 0.98)),
            eps=float(_get(train_cfg, "eps", 1e-6)),
            weight_decay=float(_get(train_cfg, "weight_decay", 0.01)),
            mask=decay_mask,
        )
    )
    return optax.chain(*parts)


def _as_key_data(rng: Any) -> jax.Array:
    if isinstance(rng, (int, np.integer)):
        rng = jax.random.key(int(rng))
    if jnp.issubdtype(jnp.asarray(rng).dtype, jax.dtypes.prng_key):
        rng = jax.random.key_data(rng)
    return jnp.asarray(rng, jnp.uint32)


# The model's activation constraints (nn.with_logical_constraint) act only under a global mesh; they pin
# the activations' layout instead of leaving it to XLA's sharding propagation. False only to compare.
ACTIVATION_CONSTRAINTS = True


def _rules_and_mesh(mesh: Mesh) -> contextlib.ExitStack:
    """Context for tracing the model inside jit: its logical constraints resolve onto ``mesh``."""
    stack = contextlib.ExitStack()
    if ACTIVATION_CONSTRAINTS:
        stack.enter_context(jax.sharding.use_abstract_mesh(mesh.abstract_mesh))
        stack.enter_context(nn.logical_axis_rules(sh.LOGICAL_RULES))
    return stack


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
    tx = make_optimizer(config.train)
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


def mlm_loss(
    logits: jax.Array,
    targets: jax.Array,
    weights: jax.Array,
    *,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    vocab_size: int | None = None,
) -> dict[str, jax.Array]:
    """Masked-LM cross-entropy in fp32 over ``logits`` [..., V] at the selected positions.

    Returns per-position arrays (shape of ``targets``), unweighted: ``nll`` (plain cross-entropy, what
    the logged loss and perplexity use), ``objective`` (``nll`` with label smoothing against the
    uniform distribution and ``z_loss * logsumexp**2`` if configured: what is minimised) and ``correct``
    (the target has the largest logit, as float); plus ``loss`` = the weighted mean of ``objective`` (a scalar).

    ``vocab_size`` < V marks the last columns as vocabulary padding: zero probability, never the max,
    outside the smoothing's uniform distribution. Every reduction over V is a max or a sum (the target
    logit too: an iota compare-and-sum, not a gather), so logits split over V (tensor parallel) stay
    split: each shard reduces its columns and only [...]-sized partial results cross devices.
    """
    logits = logits.astype(jnp.float32)
    weights = weights.astype(jnp.float32)
    num_columns = logits.shape[-1]
    vocab_size = num_columns if vocab_size is None else int(vocab_size)
    if not 0 < vocab_size <= num_columns:
        raise ValueError(f"vocab_size={vocab_size} must be in [1, logits' last dimension {num_columns}]")
    column = jax.lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1)
    if vocab_size < num_columns:
        logits = jnp.where(column < vocab_size, logits, jnp.finfo(jnp.float32).min)
    # One max pass serves both the stable log-sum-exp and the accuracy: an argmax over 250k logits is
    # a separate (index-carrying) reduction that cost 1-3 % of a CPU step. A hit is
    # ``target_logit >= max``, which differs from ``argmax == target`` only on exact ties.
    row_max = jax.lax.stop_gradient(jnp.max(logits, axis=-1))
    lse = row_max + jnp.log(jnp.sum(jnp.exp(logits - row_max[..., None]), axis=-1))
    is_target = column == targets[..., None].astype(jnp.int32)
    target_logit = jnp.sum(jnp.where(is_target, logits, 0.0), axis=-1)
    nll = lse - target_logit
    objective = nll
    if label_smoothing:
        # CE against (1 - s) * onehot + s / V over the real vocabulary: lse - (1 - s) * z_target - s * mean(z)
        real_sum = jnp.sum(jnp.where(column < vocab_size, logits, 0.0), axis=-1)
        objective = lse - (1.0 - label_smoothing) * target_logit - label_smoothing * real_sum / vocab_size
    if z_loss:
        objective = objective + z_loss * jnp.square(lse)
    correct = (target_logit >= row_max).astype(jnp.float32)
    loss = jnp.sum(objective * weights) / jnp.maximum(jnp.sum(weights), 1.0)
    return {"nll": nll, "objective": objective, "correct": correct, "loss": loss}


def gather_predictions(
    batch: Mapping[str, jax.Array], num_predictions: int, sharding: NamedSharding | None = None
) -> dict[str, jax.Array]:
    """The batch with ``mlm_positions`` / ``mlm_targets`` / ``mlm_weights`` [B, K] in place of [B, T] ones.

    ``sharding`` (the batch sharding) pins the gathered arrays to the rows' layout.
    """
    k = min(num_predictions, batch["weights"].shape[1])
    weights, positions = jax.lax.top_k(batch["weights"].astype(jnp.float32), k)
    out = {name: value for name, value in batch.items() if name not in ("targets", "weights")}
    out["mlm_positions"] = positions.astype(jnp.int32)
    out["mlm_targets"] = jnp.take_along_axis(batch["targets"], positions, axis=1)
    out["mlm_weights"] = weights
    if sharding is not None:
        for name in ("mlm_positions", "mlm_targets", "mlm_weights"):
            out[name] = jax.lax.with_sharding_constraint(out[name], sharding)
    return out


def _num_languages(config: Any, num_languages: int | None) -> int:
    if num_languages is not None:
        return int(num_languages)
    data = _get(config, "data", None)
    languages = _get(data, "languages", ()) if data is not None else ()
    return len(languages) if languages else DEFAULT_MAX_LANGUAGES


def _entropy(p: jax.Array) -> jax.Array:
    return -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), axis=-1)


def _sums(terms: dict, batch: Mapping[str, jax.Array], outputs: dict, num_languages: int) -> dict[str, jax.Array]:
    """Additive statistics of one (micro-)batch: totals, per-language sums and pool usage sums."""
    w = batch["mlm_weights"]
    lang = batch["language"].astype(jnp.int32)
    seg = functools.partial(jax.ops.segment_sum, segment_ids=lang, num_segments=num_languages)
    row_nll = jnp.sum(terms["nll"] * w, axis=1)
    row_correct = jnp.sum(terms["correct"] * w, axis=1)
    row_count = jnp.sum(w, axis=1)
    sums = {
        "nll_sum": row_nll.sum(),
        "objective_sum": jnp.sum(terms["objective"] * w),
        "correct_sum": row_correct.sum(),
        "num_predictions": row_count.sum(),
        "lang_loss_sum": seg(row_nll),
        "lang_correct_sum": seg(row_correct),
        "lang_count": seg(row_count),
    }
    if "pool" in outputs:
        weights = outputs["pool"]["weights"].astype(jnp.float32)  # [B, M]
        real = (jnp.sum(batch["attention_mask"], axis=1) > 0).astype(jnp.float32)  # all-pad rows don't count
        weights = weights * real[:, None]
        sums.update(
            pool_examples=real.sum(),
            pool_weight_sum=weights.sum(axis=0),
            pool_entropy_sum=jnp.sum(_entropy(weights) * real),
            pool_lang_weight_sum=seg(weights),
            lang_examples=seg(real),
        )
    return sums


def _real_rows(batch: Mapping[str, jax.Array]) -> jax.Array:
    """Number of rows with at least one real token (what the pool's per-row means divide by)."""
    return jnp.sum((jnp.sum(batch["attention_mask"], axis=1) > 0).astype(jnp.float32))


def pool_terms(pool: PoolConfig, keys: jax.Array, pool_out: Mapping[str, jax.Array], mask: jax.Array) -> dict:
    """The enabled (weight > 0) training-only pool losses of one (micro-)batch, each a mean over real rows."""
    terms = {}
    if pool.key_loss_weight > 0:
        terms["key_loss"] = key_matching_loss(pool_out["query"], keys, pool_out["weights"], mask)
    if pool.diversity_loss_weight > 0:
        terms["diversity_loss"] = diversity_loss(pool_out["weights"], mask)
    return terms


def _pool_weight(pool: PoolConfig, name: str) -> float:
    return {"key_loss": pool.key_loss_weight, "diversity_loss": pool.diversity_loss_weight}[name]


def _add_pool_terms(cfg: ModelConfig, params: Any, outputs: dict, batch: Mapping, sums: dict) -> jax.Array:
    """Adds ``pool_<term>_sum`` (term x real rows, additive over micro-batches) to ``sums``; returns the
    weighted sum of the terms for this micro-batch, still to be divided by the batch's real rows."""
    extra = jnp.zeros((), jnp.float32)
    if cfg.pool is None:
        return extra
    rows = _real_rows(batch)
    for name, value in pool_terms(cfg.pool, params["pool"]["keys"], outputs["pool"], batch["attention_mask"]).items():
        sums[f"pool_{name}_sum"] = value * rows
        extra = extra + _pool_weight(cfg.pool, name) * value * rows
    return extra


def _finalize(sums: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """Turns additive sums into the logged metrics (the sums stay, for aggregation over steps)."""
    count = jnp.maximum(sums["num_predictions"], 1.0)
    metrics = dict(sums)
    metrics["loss"] = sums["nll_sum"] / count
    metrics["objective"] = sums["objective_sum"] / count
    metrics["mlm_accuracy"] = sums["correct_sum"] / count
    if "pool_weight_sum" in sums:
        usage = sums["pool_weight_sum"] / jnp.maximum(sums["pool_examples"], 1.0)
        metrics["pool_usage"] = usage  # [M] mean retrieval weight of each prompt
        metrics["pool_usage_entropy"] = _entropy(usage)  # high = many prompts in use
        metrics["pool_example_entropy"] = sums["pool_entropy_sum"] / jnp.maximum(sums["pool_examples"], 1.0)
        metrics["pool_lang_weights"] = sums["pool_lang_weight_sum"] / jnp.maximum(sums["lang_examples"], 1.0)[:, None]
    for name in ("key_loss", "diversity_loss"):
        if f"pool_{name}_sum" in sums:
            metrics[f"pool_{name}"] = sums[f"pool_{name}_sum"] / jnp.maximum(sums["pool_examples"], 1.0)
    return metrics


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


def _micro_batches(batch: dict[str, jax.Array], steps: int) -> dict[str, jax.Array]:
    """[B, ...] -> [steps, B / steps, ...]; micro-batch i takes rows i, i + steps, ... so that every
    data-parallel shard contributes equally to each micro-batch (no cross-device reshuffle)."""

    def split(x):
        x = x.reshape(x.shape[0] // steps, steps, *x.shape[1:])
        return jnp.swapaxes(x, 0, 1)

    return {name: split(value) for name, value in batch.items()}


def _logits_sharding(mesh: Mesh) -> NamedSharding:
    """Logits [B, K, Vp] for the loss: rows split like the batch, the (padded) vocabulary over ``vocab``'s
    mesh axis (``sharding.LOGICAL_RULES``: tensor), so no device ever holds a whole [B, K, Vp] block.

    ``mlm_loss`` reduces over the split vocabulary with maxes and sums only. (Wrong gradients once seen
    with the vocabulary split here came from the head's unpinned decoder input, since constrained to
    (batch, length, embed) in ``model.MLMHead``, not from the split loss.)
    """
    return nn.logical_to_mesh_sharding(jax.sharding.PartitionSpec("batch", "length", "vocab"), mesh, sh.LOGICAL_RULES)


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
    tx = make_optimizer(train)
    schedule = make_schedule(train)
    accum = int(_get(train, "grad_accum_steps", 1) or 1)
    mlm_rate = float(config.data.mlm_rate)
    smoothing = float(_get(train, "label_smoothing", 0.0) or 0.0)
    z_loss = float(_get(train, "z_loss", 0.0) or 0.0)
    languages = _num_languages(config, num_languages)
    batch_size = _get(train, "batch_size", None)
    if batch_size is not None:
        sh.check_batch_size(int(batch_size), mesh, accum)
    micro_sharding = NamedSharding(mesh, jax.sharding.PartitionSpec(None, sh.BATCH_AXES))
    logits_sharding = _logits_sharding(mesh)

    def loss_fn(params, micro, rng, total, rows):
        outputs = _apply_model(model, params, micro, rng)
        outputs["logits"] = jax.lax.with_sharding_constraint(outputs["logits"], logits_sharding)
        terms = mlm_loss(
            outputs["logits"],
            micro["mlm_targets"],
            micro["mlm_weights"],
            label_smoothing=smoothing,
            z_loss=z_loss,
            vocab_size=cfg.vocab_size,
        )
        sums = _sums(terms, micro, outputs, languages)
        loss = sums["objective_sum"] / total
        if cfg.pool is not None and (cfg.pool.key_loss_weight > 0 or cfg.pool.diversity_loss_weight > 0):
            loss = loss + _add_pool_terms(cfg, params, outputs, micro, sums) / rows
        return loss, sums

    grad_fn = jax.grad(loss_fn, has_aux=True)

    def step_fn(state: TrainState, batch: dict[str, jax.Array]) -> tuple[TrainState, dict]:
        with _rules_and_mesh(mesh):
            num_predictions = max_predictions(batch["input_ids"].shape[1], mlm_rate)
            batch = gather_predictions(batch, num_predictions)
            total = jnp.maximum(jnp.sum(batch["mlm_weights"]), 1.0)
            rows = jnp.maximum(_real_rows(batch), 1.0)
            rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
            if accum == 1:
                grads, sums = grad_fn(state.params, batch, rng, total, rows)
            else:
                micro = jax.lax.with_sharding_constraint(_micro_batches(batch, accum), micro_sharding)

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
            metrics = _finalize(sums)
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
        with _rules_and_mesh(mesh):
            batch = gather_predictions(batch, max_predictions(batch["input_ids"].shape[1], mlm_rate))
            outputs = _apply_model(model, params, batch, None)
            outputs["logits"] = jax.lax.with_sharding_constraint(outputs["logits"], _logits_sharding(mesh))
            terms = mlm_loss(outputs["logits"], batch["mlm_targets"], batch["mlm_weights"], vocab_size=cfg.vocab_size)
            sums = _sums(terms, batch, outputs, languages)
            _add_pool_terms(cfg, params, outputs, batch, sums)
            return _finalize(sums)

    jitted = jax.jit(
        eval_fn,
        in_shardings=(state_shardings.params, sh.batch_sharding(mesh)),
        out_shardings=sh.replicated(mesh),
        compiler_options=compiler_options,
    )

    def eval_step(state_or_params: Any, batch: Mapping[str, Any]) -> dict:
        params = state_or_params.params if isinstance(state_or_params, TrainState) else state_or_params
        if not isinstance(next(iter(batch.values())), jax.Array):
            batch = sh.shard_batch(_pad_rows(batch, dp, pad_id=model.config.pad_token_id), mesh)
        return jitted(params, batch)

    return eval_step


def _pad_rows(batch: Mapping[str, Any], multiple: int, pad_id: int) -> dict[str, np.ndarray]:
    """Pads a host batch to a row count divisible by ``multiple`` (per process) with empty rows."""
    rows = len(next(iter(batch.values())))
    extra = -rows % multiple if jax.process_count() == 1 else 0
    if not extra:
        return {k: np.asarray(v) for k, v in batch.items()}
    fill = {"input_ids": pad_id, "positions": pad_id}
    out = {}
    for name, value in batch.items():
        value = np.asarray(value)
        pad = np.full((extra, *value.shape[1:]), fill.get(name, 0), value.dtype)
        out[name] = np.concatenate([value, pad])
    return out
