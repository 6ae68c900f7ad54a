"""The optimizer: global-norm clipping, then AdamW on a linear warm-up / linear decay schedule.

XLM-R's betas (0.9, 0.98), eps 1e-6 and weight decay 0.01 on weight matrices, embeddings and the pool's
keys/prompts, not on biases or LayerNorm scales; learning rate: linear warm-up from 0, then linear decay
to 0 at ``train.steps``. Built once per step builder (``Optimizer``: the transformation and the schedule
it follows, which the train step also logs).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import optax

NO_DECAY = ("bias", "scale")  # parameter names without weight decay (biases, LayerNorm scales)


class Optimizer(NamedTuple):
    tx: optax.GradientTransformation
    schedule: optax.Schedule  # the learning rate of update n, as ``tx`` applies it


def _get(cfg: Any, name: str, default: Any = None) -> Any:
    if isinstance(cfg, Mapping):
        return cfg.get(name, default)
    return getattr(cfg, name, default)


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


def make_optimizer(train_cfg: Any) -> Optimizer:
    """Global-norm clipping (``grad_clip`` > 0), then AdamW on ``make_schedule``."""
    schedule = make_schedule(train_cfg)
    parts = []
    clip = float(_get(train_cfg, "grad_clip", 0.0) or 0.0)
    if clip < 0:
        raise ValueError(f"train.grad_clip must be >= 0 (0 = off), got {clip}")
    if clip > 0:
        parts.append(optax.clip_by_global_norm(clip))
    parts.append(
        optax.adamw(
            schedule,
            b1=float(_get(train_cfg, "b1", 0.9)),
            b2=float(_get(train_cfg, "b2", 0.98)),
            eps=float(_get(train_cfg, "eps", 1e-6)),
            weight_decay=float(_get(train_cfg, "weight_decay", 0.01)),
            mask=decay_mask,
        )
    )
    return Optimizer(optax.chain(*parts), schedule)
