"""Checkpoint selection on English dev data for the fine-tuning evals, and the interface every fine-tuning
task (transfer today, question answering next) offers the sweep.

XTREME's protocol is zero-shot: only English is seen while training *and* while choosing the checkpoint, so
the reported per-language test scores are those of the step with the best English dev score, not the last
step (which overfits English or is just noisy). ``train_with_selection`` drives any trainer through that:
train ``eval_every`` steps, score dev, keep a snapshot of the best, repeat.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, Protocol, TypeVar

import jax

Snapshot = TypeVar("Snapshot")


@dataclasses.dataclass(frozen=True)
class Selection(Generic[Snapshot]):
    """The dev-best step, its dev score and its snapshot; ``history`` is every (step, dev score) scored."""

    step: int
    dev_score: float
    snapshot: Snapshot
    history: tuple[tuple[int, float], ...]


def eval_steps(steps: int, eval_every: int) -> list[int]:
    """The steps after which dev is scored: every ``eval_every``-th and always the last (0: only the last)."""
    if steps < 1:
        raise ValueError(f"steps={steps}: fine-tuning needs at least one step")
    if eval_every < 0:
        raise ValueError(f"eval_every={eval_every} is negative (0 = score dev only after the last step)")
    points = list(range(eval_every, steps, eval_every)) if eval_every else []
    return [*points, steps]


def train_with_selection(
    advance: Callable[[int], None],
    dev_score: Callable[[], float],
    snapshot: Callable[[], Snapshot],
    steps: int,
    eval_every: int,
) -> Selection[Snapshot]:
    """Runs ``advance(n)`` (n more training steps) up to ``steps``, scoring ``dev_score()`` at ``eval_steps``;
    keeps ``snapshot()`` of the best (higher is better; on a tie the earlier step stays)."""
    done, best, history = 0, None, []
    for point in eval_steps(steps, eval_every):
        advance(point - done)
        done = point
        score = float(dev_score())
        history.append((point, score))
        if best is None or score > best[1]:
            best = (point, score, snapshot())
    assert best is not None
    return Selection(best[0], best[1], best[2], tuple(history))


@dataclasses.dataclass(frozen=True)
class TaskScores:
    """What one fine-tuning run reports: per-language test scores at the dev-best step (the headline
    ``metric``, and any extra ``(language, metric, value)`` rows), the English dev score and its step."""

    metric: str
    test: Mapping[str, float]
    dev_score: float
    best_step: int
    extra: Sequence[tuple[str, str, float]] = ()


class FinetuneEntry(Protocol):
    """A fine-tuning task as the sweep calls it: train on English ``train``, select on English ``dev``, test
    each language of ``tests``; ``seed`` fixes head init, batch order and dropout. Question answering
    (``qa.finetune_entry``) implements it; transfer (``finetune.zero_shot_eval``) follows the same protocol."""

    def __call__(
        self, train: Sequence[Any], dev: Sequence[Any], tests: Mapping[str, Sequence[Any]], seed: int
    ) -> TaskScores: ...


def task_rows(scores: TaskScores) -> list[tuple[str, str, float]]:
    """The sweep's rows of one run: each language's headline score, their mean (``all``), the English dev
    score (``en``, ``dev_<metric>``) and the selected step (``en``, ``best_step``), then the extra rows."""
    if not scores.test:
        raise ValueError("a fine-tuning run reported no test language")
    rows = [(lang, scores.metric, float(v)) for lang, v in scores.test.items()]
    rows.append(("all", scores.metric, sum(scores.test.values()) / len(scores.test)))
    rows += [("en", f"dev_{scores.metric}", float(scores.dev_score)), ("en", "best_step", float(scores.best_step))]
    return rows + [(lang, m, float(v)) for lang, m, v in scores.extra]


def check_block(cfg: Mapping[str, Any], name: str) -> None:
    """Refuses a fine-tuning eval block's selection and seed settings that cannot run (``seeds``,
    ``eval_every``, ``dev_fraction``, ``devices``, where the block has them), naming the field: the sweep calls
    this before it loads a checkpoint, so a typo costs nothing."""
    if "seeds" in cfg and (isinstance(cfg["seeds"], bool) or not isinstance(cfg["seeds"], int) or cfg["seeds"] < 1):
        raise ValueError(f"{name}.seeds={cfg['seeds']!r} is not a positive number of fine-tuning seeds")
    if "eval_every" in cfg and (not isinstance(cfg["eval_every"], int) or cfg["eval_every"] < 0):
        raise ValueError(
            f"{name}.eval_every={cfg['eval_every']!r} is not a step count >= 0 (0 = score dev only after the last step)"
        )
    if "dev_fraction" in cfg and not 0 <= cfg["dev_fraction"] < 1:
        raise ValueError(f"{name}.dev_fraction={cfg['dev_fraction']!r} is not in [0, 1)")
    if "shard_params" in cfg and not isinstance(cfg["shard_params"], bool):
        raise ValueError(f"{name}.shard_params={cfg['shard_params']!r} is not true or false")
    if "devices" in cfg:
        devices = cfg["devices"]
        if not isinstance(devices, int) or devices < 0:
            raise ValueError(f"{name}.devices={devices!r} is not a device count >= 0 (0 = as many as divide the batch)")
        available = len(jax.local_devices())
        if devices > available:
            raise ValueError(f"{name}.devices={devices} but this host has {available} local devices")
        batch = cfg.get("batch_size", 0)
        if devices and isinstance(batch, int) and batch % devices:
            raise ValueError(f"{name}.devices={devices} does not divide {name}.batch_size={batch}")
