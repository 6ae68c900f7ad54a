"""BERT / XLM-R masking of a batch of rows in vectorised NumPy (training and evaluation alike).

Deterministic in its `rng` (the training pipeline seeds one per batch from (seed, shard, batch index), so a
batch's mask does not depend on what was drawn before: resuming needs no RNG state).
"""

from __future__ import annotations

import numpy as np


def word_start_table(vocab) -> np.ndarray:
    """bool[vocab_size]: id begins a word (its piece starts with U+2581) or is special / <unk>."""
    specials = vocab.special_ids | {vocab.unk_id}
    return np.array([i in specials or vocab.id_to_piece(i).startswith("\u2581") for i in range(vocab.vocab_size)], bool)


def _k_smallest(scores: np.ndarray, k: np.ndarray) -> np.ndarray:
    """bool [b, t]: the k[row] smallest scores of each row, ties to the lower position (a stable sort's first
    k), found by one partition and a sort of at most max(k) values per row instead of sorting every row."""
    b, t = scores.shape
    top = int(k.max(initial=0))
    if top == 0:
        return np.zeros((b, t), bool)
    smallest = np.sort(np.partition(scores, top - 1, axis=-1)[:, :top] if top < t else scores, axis=-1)
    threshold = np.take_along_axis(smallest, np.maximum(k - 1, 0), -1)
    selected = (scores <= threshold) & (k > 0)
    tied = selected.sum(-1) != k[:, 0]  # a score equal to the k-th: keep the lowest positions, as a stable sort
    if tied.any():
        order = np.argsort(scores[tied], axis=-1, kind="stable")
        exact = np.zeros((int(tied.sum()), t), bool)
        np.put_along_axis(exact, order, np.arange(t) < k[tied], axis=-1)
        selected[tied] = exact
    return selected


def mask_tokens(
    ids: np.ndarray,
    rng: np.random.Generator,
    *,
    vocab_size: int,
    mask_id: int,
    special_ids: tuple[int, ...],
    mlm_rate: float,
    max_predictions: int,
    mask_prob: float = 0.8,
    random_prob: float = 0.1,
    word_starts: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Masks int32 rows `[b, T]`; returns `input_ids`, `targets` (original id where selected, else 0) and
    `weights` (1.0 at every selected position).

    Per row: k = min(max_predictions, max(1, round(n * mlm_rate))) of its n non-special tokens are selected
    uniformly (with `word_starts`: whole words in random order while they fit in k); of those `mask_prob`
    become `<mask>`, `random_prob` a random real piece (ids 4 .. vocab_size - 2), the rest stay.
    """
    b, t = ids.shape
    candidate = np.ones((b, t), bool)
    for special in special_ids:
        candidate &= ids != special
    n = candidate.sum(-1, keepdims=True)
    k = np.minimum(
        max_predictions, np.maximum(1, np.round(n.astype(np.float32) * np.float32(mlm_rate)).astype(np.int64))
    )
    k = np.where(n > 0, k, 0)
    pos = np.broadcast_to(np.arange(t), (b, t))
    u = rng.random((b, t))
    if word_starts is None:
        selected = _k_smallest(np.where(candidate, u, 2.0), k) & candidate  # non-candidates score last
    else:
        start = word_starts[ids] | ~candidate
        word = np.cumsum(start, axis=-1) - 1  # word index of each position in its row
        word_rank = np.argsort(np.argsort(u, axis=-1), axis=-1)
        key = np.where(candidate, np.take_along_axis(word_rank, word, -1) * t + pos, t * t)
        order = np.argsort(key, axis=-1, kind="stable")  # words contiguous, in random order; others last
        sorted_word = np.take_along_axis(word, order, -1)
        sorted_cand = np.take_along_axis(candidate, order, -1)
        cum = np.cumsum(sorted_cand, axis=-1)
        flat_word = (sorted_word + np.arange(b)[:, None] * t).ravel()
        word_end = np.zeros(b * t, cum.dtype)
        np.maximum.at(word_end, flat_word, cum.ravel())
        fits = sorted_cand & (word_end[flat_word].reshape(b, t) <= k)
        selected = np.take_along_axis(fits, np.argsort(order, axis=-1), -1)
    action = rng.random((b, t))
    random_ids = rng.integers(4, vocab_size - 1, size=(b, t), dtype=ids.dtype)
    replaced = np.where(action < mask_prob, mask_id, np.where(action < mask_prob + random_prob, random_ids, ids))
    return {
        "input_ids": np.where(selected, replaced, ids).astype(ids.dtype),
        "targets": np.where(selected, ids, 0).astype(ids.dtype),
        "weights": selected.astype(np.float32),
    }
