"""The optimizer: global-norm clipping, then AdamW on a warm-up + decay schedule, per parameter group.

XLM-R's betas (0.9, 0.98), eps 1e-6 and weight decay 0.01 on weight matrices, embeddings and the pool's
keys/prompts, not on biases or LayerNorm scales. Schedules (``train.lr_schedule``, the t5x/MaxText names):
``linear`` (linear warm-up from 0, then linear decay to 0 at ``train.steps``), ``cosine`` (warm-up, then
cosine decay to 0) and ``rsqrt`` (warm-up, then ``lr * sqrt(warmup / step)``).

Parameter groups (``train.param_groups``: name -> pattern, learning-rate multiplier, own warm-up and weight
decay, ``trainable_from``, ``frozen``) let continued pre-training treat a fresh pool and a pretrained encoder
differently. A parameter belongs to the one group whose ``pattern`` fully matches its path
(``layer_0/attention/query/kernel``), else to ``rest`` (the train section's own values); a path that two
patterns match is an error, so the groups' order never matters. Each group is its own AdamW under
``optax.multi_transform``; a group that starts later (``trainable_from`` = N) is held still, with its
optimizer state untouched, for the first N updates, and then warms up from there; a ``frozen`` group has no
optimizer state at all. The train step computes no weight gradients for groups frozen at its step
(``frozen_groups``), so clipping sees the trainable groups only. Without groups the optimizer is the plain
chain (clip, AdamW) of old, so checkpoints written before groups existed resume.
"""

from __future__ import annotations

import math
import re
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from xlmp_jax.run_config import ParamGroup, TrainConfig

NO_DECAY = ("bias", "scale")  # parameter names without weight decay (biases, LayerNorm scales)
REST = "rest"  # the group of every parameter no pattern matches
SCHEDULES = ("linear", "cosine", "rsqrt")


class Optimizer(NamedTuple):
    tx: optax.GradientTransformation
    schedule: optax.Schedule  # the `rest` group's learning rate at applied update n (the one `learning_rate` logs)
    groups: tuple[ParamGroup, ...] = ()  # train.param_groups (without `rest`)
    group_schedules: dict[str, optax.Schedule] | None = None  # name -> learning rate at applied update n

    def labels(self, params: Any) -> Any:
        """The group name of every leaf of ``params`` (``rest`` for all when there are no groups)."""
        return param_labels(params, self.groups)

    def frozen_groups(self, update: int) -> frozenset[str]:
        """The groups that do not move at update ``update`` (0-based): frozen, or not trainable yet."""
        return frozenset(g.name for g in self.groups if g.frozen or update < g.trainable_from)


def make_schedule(
    train: TrainConfig, *, peak: float | None = None, warmup: int | None = None, steps: int | None = None
) -> optax.Schedule:
    """``train.lr_schedule`` from 0 to ``peak`` over ``warmup`` updates, then its decay until ``steps``.

    ``peak``, ``warmup`` and ``steps`` default to the train section's ``learning_rate``, ``warmup_steps`` and
    ``steps`` (a group passes its own)."""
    lr = train.learning_rate if peak is None else peak
    warmup = train.warmup_steps if warmup is None else warmup
    steps = train.steps if steps is None else steps
    kind = train.lr_schedule
    if kind == "linear":
        decay = optax.linear_schedule(lr, 0.0, max(steps - warmup, 1))
    elif kind == "cosine":
        decay = optax.cosine_decay_schedule(lr, max(steps - warmup, 1))
    elif kind == "rsqrt":
        # lr at the end of warm-up, then 1/sqrt in the update count (t5x's rsqrt_decay, scaled to meet lr)
        base = max(warmup, 1)

        def decay(n):
            return lr * jnp.sqrt(base / jnp.maximum(n + warmup, base).astype(jnp.float32))
    else:  # refused when the config is resolved; here for direct callers
        raise ValueError(f"train.lr_schedule must be one of {SCHEDULES}, got {kind!r}")
    if warmup == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), decay], [warmup])


def decay_mask(params: Any) -> Any:
    """True for the parameters that get weight decay: all but biases and LayerNorm scales."""

    def keep(path, _):
        names = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]
        return names[-1] not in NO_DECAY

    return jax.tree_util.tree_map_with_path(keep, params)


def param_path(path: tuple) -> str:
    """``layer_0/attention/query/kernel``: the dict keys of a leaf's path (flax boxes add none)."""
    return "/".join(str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey))


def param_labels(params: Any, groups: tuple[ParamGroup, ...]) -> Any:
    """Each leaf's group: the one group whose pattern fully matches its path, else ``rest``."""
    compiled = [(g.name, re.compile(g.pattern)) for g in groups]

    def label(path, _):
        name = param_path(path)
        hits = [group for group, pattern in compiled if pattern.fullmatch(name)]
        if len(hits) > 1:
            raise ValueError(
                f"parameter {name!r} matches the patterns of train.param_groups {' and '.join(hits)}; "
                "each parameter may belong to one group"
            )
        return hits[0] if hits else REST

    return jax.tree_util.tree_map_with_path(label, params)


def group_sizes(params: Any, groups: tuple[ParamGroup, ...]) -> dict[str, int]:
    """Parameter counts per group (``rest`` last), for the start-up report; a group matching nothing is an error."""
    counts = {g.name: 0 for g in groups} | {REST: 0}
    for label, leaf in zip(jax.tree.leaves(param_labels(params, groups)), jax.tree.leaves(params), strict=True):
        counts[label] += math.prod(leaf.shape)
    empty = [g.name for g in groups if counts[g.name] == 0]
    if empty:
        raise ValueError(
            f"train.param_groups {', '.join(empty)}: the pattern matches no parameter "
            f"({', '.join(repr(g.pattern) for g in groups if g.name in empty)})"
        )
    return counts


class _HeldState(NamedTuple):
    count: jax.Array  # updates seen, held ones included
    inner: Any


def _held_until(start: int, inner: optax.GradientTransformation) -> optax.GradientTransformation:
    """``inner``, but for the first ``start`` updates a zero update and ``inner``'s state left as it was, so
    that ``inner`` (its schedule, Adam's bias correction) starts counting when the group starts to train."""

    def init(params):
        return _HeldState(jnp.zeros((), jnp.int32), inner.init(params))

    def update(updates, state, params=None):
        def held(_):
            return jax.tree.map(jnp.zeros_like, updates), state.inner

        def live(_):
            return inner.update(updates, state.inner, params)

        new_updates, new_inner = jax.lax.cond(state.count < start, held, live, None)
        return new_updates, _HeldState(state.count + 1, new_inner)

    return optax.GradientTransformation(init, update)


def _adamw(train: TrainConfig, schedule: optax.Schedule, weight_decay: float) -> optax.GradientTransformation:
    return optax.adamw(schedule, b1=train.b1, b2=train.b2, eps=train.eps, weight_decay=weight_decay, mask=decay_mask)


def _group_schedule(train: TrainConfig, group: ParamGroup) -> tuple[optax.Schedule, optax.Schedule]:
    """The group's schedule in its own update count, and the same in the run's count (0 before it starts)."""
    own = make_schedule(
        train,
        peak=train.learning_rate * group.lr_multiplier,
        warmup=train.warmup_steps if group.warmup_steps < 0 else group.warmup_steps,
        steps=max(train.steps - group.trainable_from, 1),
    )
    if group.frozen:
        return own, lambda n: jnp.zeros((), jnp.float32)
    start = group.trainable_from

    def in_run_count(n):
        return jnp.where(n < start, 0.0, own(jnp.maximum(n - start, 0)))

    return own, in_run_count


def make_optimizer(train: TrainConfig) -> Optimizer:
    """Global-norm clipping (``grad_clip`` > 0), then AdamW per parameter group (module docstring)."""
    schedule = make_schedule(train)
    clip = [optax.clip_by_global_norm(train.grad_clip)] if train.grad_clip > 0 else []
    groups = train.param_groups
    if not groups:
        return Optimizer(optax.chain(*clip, _adamw(train, schedule, train.weight_decay)), schedule)
    transforms: dict[str, optax.GradientTransformation] = {REST: _adamw(train, schedule, train.weight_decay)}
    in_run: dict[str, optax.Schedule] = {REST: schedule}
    for group in groups:
        own, in_run[group.name] = _group_schedule(train, group)
        if group.frozen:
            transforms[group.name] = optax.set_to_zero()
            continue
        decay = train.weight_decay if group.weight_decay < 0 else group.weight_decay
        adamw = _adamw(train, own, decay)
        transforms[group.name] = _held_until(group.trainable_from, adamw) if group.trainable_from else adamw
    tx = optax.chain(*clip, optax.multi_transform(transforms, lambda params: param_labels(params, groups)))
    return Optimizer(tx, schedule, groups, in_run)


def learning_rates(optimizer: Optimizer, update: jax.Array) -> dict[str, jax.Array]:
    """The metrics ``learning_rate`` (the ``rest`` group's) and, with groups, ``learning_rate/<group>``."""
    rates = {"learning_rate": jnp.asarray(optimizer.schedule(update), jnp.float32)}
    for name, schedule in (optimizer.group_schedules or {}).items():
        rates[f"learning_rate/{name}"] = jnp.asarray(schedule(update), jnp.float32)
    return rates


def stop_frozen(params: Any, labels: Any, frozen: frozenset[str]) -> Any:
    """``params`` with the frozen groups' leaves behind ``stop_gradient``: XLA then computes no weight
    gradient for them (their gradient is an exact zero, so clipping sees the trainable groups only)."""
    if not frozen:
        return params
    return jax.tree.map(lambda p, label: jax.lax.stop_gradient(p) if label in frozen else p, params, labels)


def describe_groups(train: TrainConfig, sizes: dict[str, int]) -> list[str]:
    """Start-up lines: each group's parameter count and how it trains (``rest`` last)."""
    lines = []
    for group in (*train.param_groups, None):
        name = REST if group is None else group.name
        if group is None:
            how = f"lr {train.learning_rate:g}, warm-up {train.warmup_steps}, weight decay {train.weight_decay:g}"
        elif group.frozen:
            how = "frozen (no optimizer state, no gradients)"
        else:
            warmup = train.warmup_steps if group.warmup_steps < 0 else group.warmup_steps
            decay = train.weight_decay if group.weight_decay < 0 else group.weight_decay
            how = f"lr {train.learning_rate * group.lr_multiplier:g}, warm-up {warmup}, weight decay {decay:g}"
            how += f", frozen for updates 0-{group.trainable_from - 1}" if group.trainable_from else ""
        pattern = "" if group is None else f" ({group.pattern})"
        lines.append(f"param group {name}{pattern}: {sizes[name]:,} parameters; {how} ({train.lr_schedule} schedule)")
    return lines


def state_layout(section: Any) -> tuple[tuple[str, str, bool, bool], ...]:
    """What of ``train.param_groups`` (a config section, saved or current) decides the optimizer state's tree:
    the groups' names, patterns, freezing and whether they start later."""
    return tuple(
        sorted(
            (str(name), str(fields["pattern"]), bool(fields["frozen"]), int(fields["trainable_from"]) > 0)
            for name, fields in dict(section or {}).items()
        )
    )


def describe_layout(layout: tuple) -> str:
    if not layout:
        return "{} (one optimizer for all parameters)"
    return (
        "{"
        + ", ".join(f"{n}: {p!r}{' frozen' if f else ''}{' starts later' if s else ''}" for n, p, f, s in layout)
        + "}"
    )
