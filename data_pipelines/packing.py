"""Rows from lines: SentencePiece ids packed into XLM-R's training rows (the one packing of the project).

`build_mono_rows` packs a line stream into rows of at most `seq_length` ids (`<s> ... </s>`, unpadded) in
blocks of `block_lines(seq_length)` lines: a row never crosses a block, so any run of whole blocks can be packed
on its own and gives the rows the whole stream gives there (what lets `prepare` pack work units in parallel).
`build_pair_rows` makes TLM rows `<s> src </s></s> tgt </s>` from `src TAB tgt` lines. Every row carries its
`stat_*` counters (`STAT_KEYS`), so nothing is dropped or cut without being counted.

A line that is not valid UTF-8 stops with an error naming the file and line, so a corrupt file is found
before training rather than in a counter.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator

import numpy as np

STAT_KEYS = ("stat_lines", "stat_bad", "stat_split", "stat_truncated")
_STATS = len(STAT_KEYS)
_ASCII_SPACE = " \t\n\r\x0b\x0c"  # what the row building strips from a line
ASCII_SPACE_BYTES = _ASCII_SPACE.encode()


def block_lines(seq_length: int) -> int:
    """Lines per packing block: rows never cross one (and work units are whole blocks)."""
    return max(256, 2 * seq_length)


class ContentError(ValueError):
    """A line of an input file cannot be used (not UTF-8); names the file and the 1-based line."""


@dataclasses.dataclass(frozen=True)
class Rows:
    """One language's rows: row i is `ids[offsets[i]:offsets[i+1]]` (<s> ... </s>, unpadded)."""

    ids: np.ndarray  # int32 [total]
    offsets: np.ndarray  # int64 [R + 1]
    restart: np.ndarray  # int32 [R]: where positions restart (the TLM target side); = row length for MLM
    stats: np.ndarray  # int32 [R, 4]

    def __len__(self) -> int:
        return len(self.restart)


# ----------------------------------------------------------------------------------------------------------------
# Row building (the Python twin of preprocessors._pack_block / tlm_pairs)
# ----------------------------------------------------------------------------------------------------------------
def decode_line(where: str, line: bytes) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ContentError(f"{where}: not valid UTF-8 (byte {e.start}: {line[e.start : e.start + 4]!r})") from None


def _encode_many(vocab, texts: list[str]) -> list[np.ndarray]:
    """XLM-R ids of each text (no specials), as `XLMRVocabulary.encode` gives them."""
    flat, offsets = _encode_flat(vocab, texts)
    return [flat[offsets[i] : offsets[i + 1]] for i in range(len(texts))]


def _encode_flat(vocab, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """XLM-R ids of all texts in one array, and where each text's ids start (one thread: workers scale out)."""
    pieces = vocab._processor.encode(texts, out_type=int, num_threads=1)
    lengths = np.fromiter((len(p) for p in pieces), np.int64, len(pieces))
    a = np.fromiter(itertools.chain.from_iterable(pieces), np.int32, int(lengths.sum()))
    specials = np.array([vocab.unk_id, vocab.bos_id, vocab.eos_id], np.int32)
    flat = np.where(a >= 3, a + 1, specials[np.minimum(a, 2)]).astype(np.int32)
    return flat, np.concatenate([[0], np.cumsum(lengths)])


class _RowWriter:
    """Collects rows (int32 id arrays) with their restart index and stats."""

    def __init__(self):
        self.ids: list[np.ndarray] = []
        self.restart: list[int] = []
        self.stats: list[tuple[int, int, int, int]] = []

    def add(self, ids: np.ndarray, restart: int, stats: tuple[int, int, int, int]) -> None:
        self.ids.append(ids)
        self.restart.append(restart)
        self.stats.append(stats)

    def rows(self) -> Rows:
        lengths = np.array([len(r) for r in self.ids], np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        ids = np.concatenate(self.ids).astype(np.int32) if self.ids else np.zeros(0, np.int32)
        stats = np.array(self.stats, np.int32).reshape(-1, _STATS)
        return Rows(ids, offsets, np.array(self.restart, np.int32), stats)


def _pack_block(lines: list[tuple[str, bytes]], vocab, width: int, mode: str, out: _RowWriter) -> None:
    """One block of lines -> rows of at most `width` ids after `<s>`: whole lines (each ending in `</s>`)
    greedily, a line longer than a row split over rows; `complete_doc` starts a row after a blank line, `none`
    puts each line in its own row(s); rows without ids are dropped."""
    texts = [decode_line(w, line).strip(_ASCII_SPACE) for w, line in lines]
    flat, starts = _encode_flat(vocab, texts)
    blank = np.array([t == "" for t in texts], bool)
    lengths = np.diff(starts)
    with_eos = np.where(blank, 0, lengths + 1)  # a line's ids and its </s>
    line_at = np.concatenate([[0], np.cumsum(with_eos)])
    stream = np.full(int(line_at[-1]), vocab.eos_id, np.int32)  # every line's ids then </s>, back to back
    stream[np.arange(len(flat)) - np.repeat(starts[:-1] - line_at[:-1], lengths)] = flat
    row_chunks: list[list[tuple[int, int]]] = []
    row_stats: list[list[int]] = []
    fill, pending = 0, False
    complete_doc, one_a_row = mode == "complete_doc", mode == "none"
    for n, at, brk_line in zip(with_eos.tolist(), line_at[:-1].tolist(), blank.tolist(), strict=True):
        num = max(-(-n // width), 1)
        for idx in range(num):
            k = max(min(width, n - idx * width), 0)
            brk = pending or (complete_doc and idx == 0 and brk_line)
            cut = fill + k > width or (fill > 0 and (one_a_row or brk))
            if not row_chunks or (k > 0 and cut):
                row_chunks.append([])
                row_stats.append([0, 0, 0, 0])
                fill = k
            else:
                fill += k
            pending = brk and k == 0
            if k:
                row_chunks[-1].append((at + idx * width, at + idx * width + k))
            if idx == 0:
                row_stats[-1][0] += int(n > 0)
                row_stats[-1][2] += int(num > 1)
    bos = np.array([vocab.bos_id], np.int32)
    for chunks, stats in zip(row_chunks, row_stats, strict=True):
        if chunks:
            row = np.concatenate([bos, *(stream[a:b] for a, b in chunks)])
            out.add(row, len(row), tuple(stats))


def build_mono_rows(lines: Iterator[tuple[str, bytes]], vocab, *, seq_length: int, mode: str) -> Rows:
    """The line stream -> rows, as `lines_to_rows` + `rows_to_features` build them (same default block)."""
    block = block_lines(seq_length)
    out, buf = _RowWriter(), []
    for item in lines:
        buf.append(item)
        if len(buf) == block:
            _pack_block(buf, vocab, seq_length - 1, mode, out)
            buf = []
    if buf:
        _pack_block(buf, vocab, seq_length - 1, mode, out)
    return out.rows()


def build_pair_rows(lines: Iterator[tuple[str, bytes]], vocab, *, seq_length: int) -> Rows:
    """`src TAB tgt` lines -> TLM rows `<s> src </s></s> tgt </s>`, each side cut to share `seq_length - 4` ids
    (the longer side gives way first). A line without a TAB is counted (`stat_bad`) on the next row; a pair with
    an empty side makes no row."""
    bos, eos = vocab.bos_id, vocab.eos_id
    budget = seq_length - 4
    half = budget // 2
    out, carried = _RowWriter(), 0
    for batch in _batches(lines, 1024):  # one SentencePiece call per batch of lines
        sides, malformed = [], []
        for where, line in batch:
            text = decode_line(where, line)
            parts = text.split("\t", 1)
            malformed.append(int(len(parts) != 2))
            src, tgt = (parts + ["", ""])[:2] if text else ("", "")
            sides += [src.strip(_ASCII_SPACE), tgt.strip(_ASCII_SPACE)]
        encoded = _encode_many(vocab, sides)
        for j, bad in enumerate(malformed):
            src_ids, tgt_ids = encoded[2 * j], encoded[2 * j + 1]
            carried += bad
            if len(src_ids) == 0 or len(tgt_ids) == 0:
                continue
            ns, nt = len(src_ids), len(tgt_ids)
            ks = min(ns, max(half, budget - nt))
            kt = min(nt, budget - ks)
            row = np.concatenate([[bos], src_ids[:ks], [eos, eos], tgt_ids[:kt], [eos]]).astype(np.int32)
            out.add(row, ks + 2, (1, carried, 0, int(ks + kt < ns + nt)))
            carried = 0
    return out.rows()


def _batches(items: Iterator, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
