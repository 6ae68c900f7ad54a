"""The batch format both inputs produce and the steps read (data_pipelines/README.md): its keys, how many
positions a row may select (K, ``max_predictions``), and the filler rows that bring a short batch up to a
fixed row count without adding tokens or predictions.

Its own module so that the trainer and the steps can use it without importing an input pipeline (grain,
TensorFlow).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

BATCH_KEYS = ("input_ids", "attention_mask", "positions", "targets", "weights", "language")


def max_predictions(seq_length: int, mlm_rate: float) -> int:
    """K, the most MLM-selected positions a row of ``seq_length`` holds: ceil(seq_length * mlm_rate) + 1, at
    most ``seq_length``.

    A static shape, not a property of the data: the masking caps each row at K, the steps gather K positions
    per row (``top_k(weights, K)``) and the FLOP count and memory plan size the LM head by K, so all of them
    read it here rather than recomputing it.
    """
    return min(seq_length, int(math.ceil(seq_length * mlm_rate)) + 1)


def pad_rows(batch: Mapping[str, Any], rows: int, pad_id: int) -> dict[str, np.ndarray]:
    """A host batch (NumPy arrays) with filler rows appended up to ``rows``: ``pad_id`` in ``input_ids`` and
    ``positions``, zeros elsewhere, so they carry no tokens and no predictions."""
    out = {name: np.asarray(value) for name, value in batch.items()}
    extra = rows - len(next(iter(out.values())))
    if not extra:
        return out
    fill = {"input_ids": pad_id, "positions": pad_id}
    return {
        name: np.concatenate([value, np.full((extra, *value.shape[1:]), fill.get(name, 0), value.dtype)])
        for name, value in out.items()
    }


def row_arrays(
    records: Sequence[tuple[np.ndarray, int, np.ndarray]], seq_length: int, pad_id: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Prepared rows `(ids, restart, stats)` -> `input_ids` and `positions` [b, seq_length] (pad-filled) and the
    summed `stat_*` counters. Positions count from `pad_id + 1` and restart at `restart` (a TLM row's target)."""
    ids = np.full((len(records), seq_length), pad_id, np.int32)
    positions = np.full((len(records), seq_length), pad_id, np.int32)
    stats = np.zeros(4, np.int64)
    for i, (row, restart, row_stats) in enumerate(records):
        m = len(row)
        ids[i, :m] = row
        j = np.arange(m)
        positions[i, :m] = np.where(j < restart, j, j - restart) + pad_id + 1
        stats += row_stats
    return ids, positions, stats
