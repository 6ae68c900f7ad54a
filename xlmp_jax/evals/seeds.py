"""Spread over seeds: mean, standard deviation and a 95 % Student-t interval, and the XLM-P minus baseline
difference with an honest label for what its interval covers.

A score from one fine-tuning run moves with the run's seed; a score from one pre-training run moves with
*that* seed too, and a much larger share of the variance is there. So the difference between the arms gets
its interval over paired pre-training seeds when there are several work directories per arm; with one per
arm the only interval left is over fine-tuning seeds, and it is labelled as fine-tuning noise only (it says
nothing about whether another pre-training run would agree).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
PRETRAINING = "pre-training seeds"
FINETUNING_NOISE = "fine-tuning noise only"
NO_INTERVAL = "one run: no interval"


@dataclasses.dataclass(frozen=True)
class Spread:
    """Mean of ``n`` values, their sample standard deviation (ddof=1) and the two-sided t-interval of the mean
    (NaN std/interval for ``n`` = 1: one value has no spread)."""

    mean: float
    std: float
    low: float
    high: float
    n: int

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


def spread(values: Sequence[float], confidence: float = CONFIDENCE) -> Spread:
    """The ``Spread`` of ``values`` (at least one finite number)."""
    x = np.asarray(list(values), np.float64)
    if x.size == 0:
        raise ValueError("spread of no values")
    if not np.isfinite(x).all():
        raise ValueError(f"spread of non-finite values: {x.tolist()}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence} is not in (0, 1)")
    mean = float(x.mean())
    if x.size == 1:
        return Spread(mean, float("nan"), float("nan"), float("nan"), 1)
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, x.size - 1)) * std / np.sqrt(x.size)
    return Spread(mean, std, mean - half, mean + half, int(x.size))


@dataclasses.dataclass(frozen=True)
class Difference:
    """XLM-P minus baseline: its spread and what the interval is over (``PRETRAINING``, ``FINETUNING_NOISE``
    or ``NO_INTERVAL``)."""

    spread: Spread
    over: str


def arm_difference(xlmp: Sequence[Sequence[float]], baseline: Sequence[Sequence[float]]) -> Difference:
    """The XLM-P minus baseline difference from per-work-directory score lists (one score per fine-tuning
    seed; deterministic evals give one).

    ``xlmp[i]`` pairs with ``baseline[i]`` (the i-th pre-training seed of each arm). With two or more pairs,
    each pair's difference of seed means is one sample: the interval is over pre-training seeds. With one
    pair, the fine-tuning seeds pair by index (same seed, same head init and batch order) and the interval
    is labelled fine-tuning noise only; with one seed as well there is no interval.
    """
    if not xlmp or not baseline:
        raise ValueError(f"arm_difference needs both arms (XLM-P: {len(xlmp)}, baseline: {len(baseline)} runs)")
    if len(xlmp) != len(baseline):
        raise ValueError(
            f"XLM-P has {len(xlmp)} work directories and the baseline {len(baseline)}: pre-training seeds pair "
            "one to one (list the same number per arm, in seed order)"
        )
    if len(xlmp) > 1:
        deltas = [float(np.mean(x)) - float(np.mean(b)) for x, b in zip(xlmp, baseline, strict=True)]
        return Difference(spread(deltas), PRETRAINING)
    x, b = list(xlmp[0]), list(baseline[0])
    if len(x) != len(b):
        raise ValueError(f"fine-tuning seeds differ between the arms ({len(x)} vs {len(b)}): they pair by index")
    deltas = [xi - bi for xi, bi in zip(x, b, strict=True)]
    return Difference(spread(deltas), FINETUNING_NOISE if len(deltas) > 1 else NO_INTERVAL)
