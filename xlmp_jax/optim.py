"""The optimizer: global-norm clipping, then AdamW on a linear warm-up / linear decay schedule.

XLM-R's betas (0.9, 0.98), eps 1e-6 and weight decay 0.01 on weight matrices, embeddings and the pool's
keys/prompts, not on biases or LayerNorm scales; learning rate: linear warm-up from 0, then linear decay
to 0 at ``train.steps``. Built once per step builder (``Optimizer``: the transformation and the schedule
it follows, which the train step also logs).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import optax

from xlmp_jax.run_config import TrainConfig

NO_DECAY = ("bias", "scale")  # parameter names without weight decay (biases, LayerNorm scales)


class Optimizer(NamedTuple):
    tx: optax.GradientTransformation
    schedule: optax.Schedule  # the learning rate of update n, as ``tx`` applies it


def make_schedule(train: TrainConfig) -> optax.Schedule:
    """Linear warm-up 0 -> ``learning_rate`` over ``warmup_steps``, then linear decay to 0 at ``steps``."""
    lr, steps, warmup = train.learning_rate, train.steps, train.warmup_steps
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


def make_optimizer(train: TrainConfig) -> Optimizer:
    """Global-norm clipping (``grad_clip`` > 0), then AdamW on ``make_schedule``."""
    schedule = make_schedule(train)
    parts = [optax.clip_by_global_norm(train.grad_clip)] if train.grad_clip > 0 else []
    parts.append(
        optax.adamw(
            schedule,
            b1=train.b1,
            b2=train.b2,
            eps=train.eps,
            weight_decay=train.weight_decay,
            mask=decay_mask,
        )
    )
    return Optimizer(optax.chain(*parts), schedule)
