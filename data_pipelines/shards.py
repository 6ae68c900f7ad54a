"""Prepared data on disk: ArrayRecord shards of packed rows and the manifest that describes them.

`python -m data_pipelines.prepare` writes, per language entry and split, shards named
`<entry>-<split>.array_record-NNNNN-of-NNNNN` (one per work unit, in stream order) and, last,
`manifest.json`. A row is one record: int32 little-endian `[restart, stat_lines, stat_bad, stat_split,
stat_truncated, ids...]`. Reading needs neither TensorFlow nor a vocabulary: grain's `ArrayRecordDataSource`
maps a row index of an entry to its shard and offset.

A folder without a manifest is an unfinished (or interrupted) prepare and is refused, as is a manifest whose
vocabulary, seq_length or packing differs from the run's, a shard that is missing, or one whose size or
record count differs from the manifest's.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence

import numpy as np

from data_pipelines.packing import STAT_KEYS

FORMAT = "xlmp-prepared-1"
MANIFEST = "manifest.json"
RECORD_OPTIONS = "group_size:1,zstd:1"  # one record per chunk: random access reads only its row
HEADER = 1 + len(STAT_KEYS)  # restart, then the stat_* counters, then the ids


class PreparedDataError(ValueError):
    """Prepared data that cannot be used as it is (names the folder or file, and what to do)."""


def shard_name(entry: str, split: str, index: int, count: int) -> str:
    return f"{entry}-{split}.array_record-{index:05d}-of-{count:05d}"


def encode_row(ids: np.ndarray, restart: int, stats: Sequence[int]) -> bytes:
    return np.concatenate([[restart], stats, ids]).astype("<i4").tobytes()


def decode_row(record: bytes) -> tuple[np.ndarray, int, np.ndarray]:
    """(ids, restart, stats) of one record."""
    a = np.frombuffer(record, "<i4")
    return a[HEADER:], int(a[0]), a[1:HEADER]


def is_remote(path: str) -> bool:
    return "://" in path


def read_manifest(directory: str) -> dict:
    """The manifest of a prepared folder; a clear error when the folder holds none (an unfinished prepare)."""
    path = os.path.join(directory, MANIFEST)
    if is_remote(path):
        from etils import epath

        p = epath.Path(path)
        text = p.read_text() if p.exists() else None
    else:
        text = open(path).read() if os.path.exists(path) else None
    if text is None:
        raise PreparedDataError(
            f"{path}: no manifest, so the prepared data in {directory!r} is missing or unfinished (a prepare that "
            f"was interrupted writes none): run `python -m data_pipelines.prepare --config=... --out={directory}`"
        )
    manifest = json.loads(text)
    if manifest.get("format") != FORMAT:
        raise PreparedDataError(f"{path}: format {manifest.get('format')!r}, this reader reads {FORMAT!r}")
    return manifest


def check_matches(manifest: dict, directory: str, *, seq_length: int, packing: str, vocab_sha256: str) -> None:
    """Refuses prepared rows made for another vocabulary, row length or packing, naming both values."""
    theirs = {"seq_length": manifest["seq_length"], "packing": manifest["packing"], "vocabulary": manifest["vocab"]["sha256"]}  # fmt: skip
    mine = {"seq_length": seq_length, "packing": packing, "vocabulary": vocab_sha256}
    for key, value in theirs.items():
        if value != mine[key]:
            shown = f"{manifest['vocab']['path']} (sha256 {value[:12]})" if key == "vocabulary" else value
            raise PreparedDataError(
                f"{os.path.join(directory, MANIFEST)} was prepared with {key} {shown!r}, this run has "
                f"{mine[key] if key != 'vocabulary' else mine[key][:12]!r}: prepare again for this run's data block"
            )


@dataclasses.dataclass(frozen=True)
class Split:
    """What the manifest says of one entry's split."""

    entry: str
    split: str
    kind: str
    examples: int  # n_l for temperature sampling (lines, or documents)
    rows: int
    tokens: int
    stats: tuple[int, ...]
    shards: tuple[dict, ...]  # {"file", "rows", "bytes"}


def splits_of(manifest: dict) -> dict[tuple[str, str], Split]:
    out = {}
    for s in manifest["splits"]:
        out[s["entry"], s["split"]] = Split(
            s["entry"], s["split"], s["kind"], s["examples"], s["rows"], s["tokens"], tuple(s["stats"]),
            tuple(s["shards"]),
        )  # fmt: skip
    return out


class ShardRows:
    """The rows of one or more entries' splits, back to back, read by index from their shards through one grain
    ArrayRecord data source (so a batch mixing many languages is one batched read); `starts[k]` is where the
    k-th split's rows begin."""

    def __init__(self, directory: str, *splits: Split):
        self.split = splits[0]
        self.splits = splits
        self.starts = np.cumsum([0] + [sp.rows for sp in splits])
        paths = []
        for sp in splits:
            for sh in sp.shards:
                if sh["rows"] == 0:
                    continue
                path = os.path.join(directory, sh["file"])
                size = _size(path)
                if size is None:
                    raise PreparedDataError(f"{path}: shard missing (the manifest lists it with {sh['rows']} rows)")
                if size != sh["bytes"]:
                    raise PreparedDataError(
                        f"{path}: {size} bytes, the manifest says {sh['bytes']} (truncated or rewritten): prepare again"
                    )
                paths.append(path)
        self._source = None
        if paths:
            from grain.sources import ArrayRecordDataSource

            what = ", ".join(f"{sp.entry} {sp.split}" for sp in splits[:3]) + (" ..." if len(splits) > 3 else "")
            try:
                self._source = ArrayRecordDataSource(paths)
            except Exception as e:  # the reader's own errors: name the folder's shards
                raise PreparedDataError(f"{directory}: cannot read the shards of {what}: {e}") from e
            if len(self._source) != self.starts[-1]:
                raise PreparedDataError(
                    f"{paths[0]} ...: {len(self._source)} rows in the shards of {what}, the manifest says "
                    f"{self.starts[-1]}"
                )

    def __len__(self) -> int:
        return int(self.starts[-1])

    def get(self, indices: Sequence[int]) -> list[tuple[np.ndarray, int, np.ndarray]]:
        """(ids, restart, stats) of rows `indices` (one batched read)."""
        return [decode_row(r) for r in self.records(indices)]

    def records(self, indices: Sequence[int]) -> list[bytes]:
        """The raw records of rows `indices` (one batched read)."""
        if not len(indices):
            return []
        return self._source.__getitems__([int(i) for i in indices])


def batch_arrays(records: Sequence[bytes], seq_length: int, pad_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Records -> `input_ids` and `positions` [b, seq_length] (pad-filled) and the summed `stat_*` counters, in
    whole-batch NumPy (what `batch_format.row_arrays` does row by row, for the training hot path)."""
    b = len(records)
    sizes = np.fromiter((len(r) for r in records), np.int64, b) // 4
    flat = np.frombuffer(b"".join(records), "<i4")
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    header = starts[:, None] + np.arange(HEADER)
    restart, stats = flat[header[:, 0]], flat[header[:, 1:]].sum(0, dtype=np.int64)
    body = np.ones(len(flat), bool)
    body[header.ravel()] = False
    j = np.arange(seq_length)
    filled = j < (sizes - HEADER)[:, None]
    ids = np.full((b, seq_length), pad_id, np.int32)
    ids[filled] = flat[body]
    positions = np.where(filled, np.where(j < restart[:, None], j, j - restart[:, None]) + pad_id + 1, pad_id)
    return ids, positions.astype(np.int32), stats


def _size(path: str) -> int | None:
    if is_remote(path):
        from etils import epath

        p = epath.Path(path)
        return p.stat().length if p.exists() else None
    return os.path.getsize(path) if os.path.exists(path) else None
