"""Margin-based bitext mining (Artetxe & Schwenk, 2019), the scoring of XTREME's BUCC task.

A pair's score is the ratio margin: its cosine divided by the mean of (the average cosine of the source's
k nearest targets, the average cosine of the target's k nearest sources). Dividing by the neighbourhoods
penalises "hub" sentences that are close to everything. Candidates are each sentence's best-scoring pair
among its k nearest neighbours, forward (source -> target), backward, their intersection, or (``max``,
XTREME's default) both directions merged greedily into a one-to-one set, best score first. A threshold on the
score is then chosen where F1 against gold pairs peaks (``best_threshold``) and applied elsewhere (``prf``).
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Mapping

import jax
import jax.numpy as jnp
import numpy as np

MODES = ("forward", "backward", "intersection", "max")
Pair = tuple[int, int]


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero), fp32."""
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


@functools.partial(jax.jit, static_argnums=2)
def _top_k_block(queries: jax.Array, base: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    return jax.lax.top_k(queries @ base.T, k)


def knn(queries: np.ndarray, base: np.ndarray, k: int, block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """(cosines [n, k], indices [n, k]) of each query's k most similar rows of ``base``, best first.

    Blocks of ``block`` queries at a time: the full [n, m] matrix is never held (BUCC has ~400k sentences a
    side). The last block is padded to ``block`` rows, so one compiled program serves every block.
    """
    if k < 1 or k > len(base):
        raise ValueError(f"k={k} nearest neighbours needs 1 <= k <= {len(base)} (the size of the searched side)")
    q, b = jnp.asarray(unit_rows(queries)), jnp.asarray(unit_rows(base))
    block = min(block, len(q))
    sims, idx = [], []
    for start in range(0, len(q), block):
        chunk = q[start : start + block]
        real = len(chunk)
        if real < block:
            chunk = jnp.concatenate([chunk, jnp.zeros((block - real, q.shape[1]), q.dtype)])
        s, i = _top_k_block(chunk, b, k)
        sims.append(np.asarray(s)[:real])
        idx.append(np.asarray(i)[:real])
    return np.concatenate(sims), np.concatenate(idx)


def ratio_scores(cos: np.ndarray, candidates: np.ndarray, own_mean: np.ndarray, other_mean: np.ndarray) -> np.ndarray:
    """Ratio margin of each (row i, candidates[i, j]) pair whose cosine is ``cos[i, j]``:
    cos / ((own_mean[i] + other_mean[candidates[i, j]]) / 2)."""
    return cos / ((own_mean[:, None] + other_mean[candidates]) / 2)


def mine(source: np.ndarray, target: np.ndarray, k: int = 4, mode: str = "max", block: int = 1024) -> dict[Pair, float]:
    """Candidate pairs {(source index, target index): ratio-margin score} (``MODES``; module docstring).

    ``k`` is capped at each side's size (as XTREME does), so a tiny side still mines.
    """
    if mode not in MODES:
        raise ValueError(f"mining mode {mode!r} is not one of {MODES}")
    if k < 1:
        raise ValueError(f"mining needs k >= 1 nearest neighbours, got k={k}")
    fwd_cos, fwd_idx = knn(source, target, min(k, len(target)), block)
    bwd_cos, bwd_idx = knn(target, source, min(k, len(source)), block)
    fwd_mean, bwd_mean = fwd_cos.mean(axis=1), bwd_cos.mean(axis=1)
    fwd_scores = ratio_scores(fwd_cos, fwd_idx, fwd_mean, bwd_mean)
    bwd_scores = ratio_scores(bwd_cos, bwd_idx, bwd_mean, fwd_mean)
    fwd_best = fwd_idx[np.arange(len(source)), fwd_scores.argmax(axis=1)]
    bwd_best = bwd_idx[np.arange(len(target)), bwd_scores.argmax(axis=1)]
    fwd_score, bwd_score = fwd_scores.max(axis=1), bwd_scores.max(axis=1)
    if mode == "forward":
        return {(i, int(j)): float(fwd_score[i]) for i, j in enumerate(fwd_best)}
    if mode == "backward":
        return {(int(i), j): float(bwd_score[j]) for j, i in enumerate(bwd_best)}
    if mode == "intersection":
        return {(i, int(j)): float(fwd_score[i]) for i, j in enumerate(fwd_best) if bwd_best[j] == i}
    merged = [(float(fwd_score[i]), i, int(j)) for i, j in enumerate(fwd_best)]
    merged += [(float(bwd_score[j]), int(i), j) for j, i in enumerate(bwd_best)]
    merged.sort(key=lambda item: -item[0])  # stable: equal scores keep forward-then-backward order
    used_source, used_target, pairs = set(), set(), {}
    for score, i, j in merged:
        if i not in used_source and j not in used_target:
            used_source.add(i)
            used_target.add(j)
            pairs[(i, j)] = score
    return pairs


def prf(candidates: Mapping, gold: Collection, threshold: float) -> tuple[float, float, float]:
    """(precision, recall, F1) of the candidates scoring >= threshold against the gold pairs."""
    if not gold:
        raise ValueError("F1 needs at least one gold pair")
    kept = {pair for pair, score in candidates.items() if score >= threshold}
    correct = len(kept & set(gold))
    if not correct:
        return 0.0, 0.0, 0.0
    precision, recall = correct / len(kept), correct / len(gold)
    return precision, recall, 2 * precision * recall / (precision + recall)


def best_threshold(candidates: Mapping, gold: Collection) -> tuple[float, float]:
    """(threshold, F1): the score cut where F1 against ``gold`` peaks.

    Cuts fall only between distinct scores (tied candidates are kept or dropped together); the threshold is
    the midpoint between the last kept score and the next lower one (the last kept score itself when nothing
    is lower). The first cut of the highest F1 wins. No correct candidate at all: (inf, 0.0), nothing kept.
    """
    if not gold:
        raise ValueError("choosing a threshold needs at least one gold pair")
    gold = set(gold)
    scores = sorted(((score, pair in gold) for pair, score in candidates.items()), key=lambda x: -x[0])
    best, threshold, kept, correct = 0.0, float("inf"), 0, 0
    for n, (score, hit) in enumerate(scores):
        kept += 1
        correct += hit
        if n + 1 < len(scores) and scores[n + 1][0] == score:
            continue  # a tie: cut after the whole group
        f1 = 2 * correct / (kept + len(gold))  # = 2PR / (P + R)
        if f1 > best:
            best = f1
            threshold = (score + scores[n + 1][0]) / 2 if n + 1 < len(scores) else score
    return threshold, best
