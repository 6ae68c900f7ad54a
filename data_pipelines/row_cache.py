"""Per-language training rows, tokenised once into a memory-mapped cache: O(1) random access to any row.

A language's `train` line stream (the same lines, in the same order, as its SeqIO task reads) is tokenised
with the Python SentencePiece processor (the ids of `XLMRVocabulary.encode`, which equal the TF op's) and
packed exactly as `preprocessors.lines_to_rows` / `tlm_pairs` pack it (same blocks, same greedy rows, same
`stat_*` counters). The rows are stored as flat int32 ids with row offsets in a folder keyed by the input's
fingerprint (path, size, mtime), the vocabulary, seq_length and the packing mode, so the next start-up (or
the next host on the same disk) just memory-maps them. No tf.data graph is built for training.

One difference from the SeqIO path, on purpose: a line that is not valid UTF-8 stops the build with an error
naming the file and line (the SeqIO path skips it and counts it in `stat_bad`), so a corrupt file is found
before training rather than in a counter.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator

import numpy as np

from data_pipelines import readers, sources, tasks
from data_pipelines.config import DataConfig

CACHE_VERSION = 1
_STATS = 4  # stat_lines, stat_bad, stat_split, stat_truncated (preprocessors.STAT_KEYS order)
_WIKI40B_MARKERS = re.compile(rb"_START_ARTICLE_|_START_SECTION_|_START_PARAGRAPH_|_NEWLINE_")
_ASCII_SPACE = b" \t\n\r\x0b\x0c"  # what tf.strings.strip strips


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
# Line streams: (where, text bytes) for the train split of one language, as its SeqIO source reads it
# ----------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class LineStream:
    """A language's train lines: how to read them and a fingerprint of what they are."""

    key: str  # fingerprint of the input (files + ranges, or TFDS name + split + size)
    read: object  # () -> Iterator[(where: str, line: bytes)]
    kind: str  # "lines" | "pairs"


def _file_key(path: str) -> str:
    """Path, size and modification time (ns and inode for local files, where gfile's stat is coarser)."""
    if os.path.exists(path):
        st = os.stat(path)
        return f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"
    import tensorflow as tf

    st = tf.io.gfile.stat(path)
    return f"{path}|{st.length}|{st.mtime_nsec}"


def _file_lines(ranges: list[tuple[str, str, int, int]]) -> Iterator[tuple[str, bytes]]:
    """Lines [a, b) of each (file, shown name, a, b), as `TextLineDataset` splits them (\\r\\n too)."""
    for path, shown, a, b in ranges:
        for i, line in enumerate(readers.iter_lines(path)):
            if i >= b:
                break
            if i >= a:
                yield f"{shown}:{i + 1}", line[:-1] if line.endswith(b"\r") else line


def _document_lines(docs: Iterator[tuple[str, bytes]], wiki40b: bool) -> Iterator[tuple[str, bytes]]:
    """Documents -> their non-blank lines, then an empty boundary line (`preprocessors.documents_to_lines`)."""
    for where, text in docs:
        if wiki40b:
            text = _WIKI40B_MARKERS.sub(b"\n", text)
        for j, line in enumerate(text.split(b"\n")):
            if line.strip(_ASCII_SPACE):
                yield f"{where} line {j + 1}", line
        yield where, b""


def line_stream(spec: tasks.MixtureSpec, lid: int, cfg: DataConfig) -> LineStream:
    """The train line stream of language `lid` of the mixture, read from its SeqIO task's source."""
    import seqio

    source = seqio.get_mixture_or_task(spec.task_names[lid]).source
    kind = "pairs" if "_tlm_" in spec.task_names[lid] else "lines"
    if isinstance(source, sources.SplitFilesSource | sources.TextLinesSource):
        ranges = source.train_ranges()
        key = ";".join(f"{_file_key(p)}|{a}|{b}" for p, _, a, b in ranges)
        return LineStream(key, lambda: _file_lines(ranges), kind)
    if isinstance(source, seqio.TFExampleDataSource):
        import tensorflow as tf

        files = sorted(tf.io.gfile.glob(source._split_to_filepattern["train"]))
        field = cfg.text_field

        def docs():
            for f in files:
                for i, rec in enumerate(tf.data.TFRecordDataset(f).as_numpy_iterator()):
                    ex = tf.train.Example.FromString(rec)
                    yield f"{f} record {i + 1}", ex.features.feature[field].bytes_list.value[0]

        key = ";".join(_file_key(f) for f in files)
        return LineStream(key, lambda: _document_lines(docs(), False), kind)
    if isinstance(source, seqio.TfdsDataSource):
        lang = spec.languages[lid]
        wiki40b = cfg.source == "wiki40b"
        name = cfg.wiki40b_tfds_name.replace("{lang}", lang) if wiki40b else cfg.mc4_tfds_name
        split = "train" if wiki40b else lang
        n = source.num_input_examples("train")
        return LineStream(f"tfds|{name}|{cfg.tfds_data_dir}|{split}|{n}", lambda: _document_lines(
            _tfds_documents(name, split, cfg.tfds_data_dir or None), wiki40b), kind)  # fmt: skip
    raise TypeError(f"language {spec.languages[lid]!r}: no row cache for a {type(source).__name__}")


def _tfds_documents(name: str, split: str, data_dir: str | None) -> Iterator[tuple[str, bytes]]:
    """A TFDS split's `text`, in order: random-access `tfds.data_source` when the dataset was prepared as
    array_record, else (TFRecord) one sequential pass through tf.data -- either way read once into the cache."""
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=data_dir)
    fmt = str(getattr(builder.info, "file_format", "") or "").lower()  # e.g. FileFormat.ARRAY_RECORD
    if "array_record" in fmt:
        source = tfds.data_source(name, split=split, data_dir=data_dir)
        for i in range(len(source)):
            yield f"tfds {name}[{split}] #{i}", source[i]["text"]
        return
    ds = builder.as_dataset(split=split, shuffle_files=False)
    for i, ex in enumerate(ds.as_numpy_iterator()):
        yield f"tfds {name}[{split}] #{i}", ex["text"]


# ----------------------------------------------------------------------------------------------------------------
# Row building (the Python twin of preprocessors._pack_block / tlm_pairs)
# ----------------------------------------------------------------------------------------------------------------
def _decode(where: str, line: bytes) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ContentError(f"{where}: not valid UTF-8 (byte {e.start}: {line[e.start : e.start + 4]!r})") from None


def _encode_many(vocab, texts: list[str]) -> list[np.ndarray]:
    """XLM-R ids of each text (no specials), as `XLMRVocabulary.encode` gives them."""
    out = []
    for p in vocab._processor.encode(texts, out_type=int):
        a = np.asarray(p, np.int32)
        out.append(
            np.where(a >= 3, a + 1, np.array([vocab.unk_id, vocab.bos_id, vocab.eos_id], np.int32)[np.minimum(a, 2)])
        )
    return out


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
    """One block of lines -> rows, as `preprocessors._pack_block` followed by the `length > 0` filter."""
    texts = [_decode(w, line).strip(" \t\n\r\x0b\x0c") for w, line in lines]
    boundary = [t == "" for t in texts]
    encoded = _encode_many(vocab, texts)
    eos = np.array([vocab.eos_id], np.int32)
    row_chunks: list[list[np.ndarray]] = []
    row_stats: list[list[int]] = []
    fill, pending = 0, False
    complete_doc, one_a_row = mode == "complete_doc", mode == "none"
    for ids, brk_line in zip(encoded, boundary, strict=True):
        line_ids = np.zeros(0, np.int32) if brk_line else np.concatenate([ids, eos])
        n = len(line_ids)
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
            row_chunks[-1].append(line_ids[idx * width : idx * width + k])
            if idx == 0:
                row_stats[-1][0] += int(n > 0)
                row_stats[-1][2] += int(num > 1)
    bos = np.array([vocab.bos_id], np.int32)
    for chunks, stats in zip(row_chunks, row_stats, strict=True):
        body = np.concatenate(chunks)
        if len(body):
            row = np.concatenate([bos, body])
            out.add(row, len(row), tuple(stats))


def build_mono_rows(lines: Iterator[tuple[str, bytes]], vocab, *, seq_length: int, mode: str) -> Rows:
    """The line stream -> rows, as `lines_to_rows` + `rows_to_features` build them (same default block)."""
    block = max(256, 2 * seq_length)
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
    """`src TAB tgt` lines -> TLM rows `<s> src </s></s> tgt </s>`, as `_tsv_to_pairs` + `tlm_pairs` build them."""
    bos, eos = vocab.bos_id, vocab.eos_id
    budget = seq_length - 4
    half = budget // 2
    out, carried = _RowWriter(), 0
    for where, line in lines:
        text = _decode(where, line)
        parts = text.split("\t", 1)
        malformed = int(len(parts) != 2)
        src, tgt = (parts + ["", ""])[:2] if text else ("", "")
        src_ids, tgt_ids = _encode_many(vocab, [src.strip(" \t\n\r\x0b\x0c"), tgt.strip(" \t\n\r\x0b\x0c")])
        carried += malformed
        if len(src_ids) == 0 or len(tgt_ids) == 0:
            continue
        ns, nt = len(src_ids), len(tgt_ids)
        ks = min(ns, max(half, budget - nt))
        kt = min(nt, budget - ks)
        row = np.concatenate([[bos], src_ids[:ks], [eos, eos], tgt_ids[:kt], [eos]]).astype(np.int32)
        out.add(row, ks + 2, (1, carried, 0, int(ks + kt < ns + nt)))
        carried = 0
    return out.rows()


# ----------------------------------------------------------------------------------------------------------------
# The cache
# ----------------------------------------------------------------------------------------------------------------
_FILES = ("ids", "offsets", "restart", "stats")


def cache_key(stream: LineStream, vocab, cfg: DataConfig) -> str:
    blob = json.dumps(
        [CACHE_VERSION, stream.key, stream.kind, vocab._fingerprint, cfg.seq_length, cfg.packing], sort_keys=True
    )
    return hashlib.sha1(blob.encode()).hexdigest()[:20]


def load_or_build(spec: tasks.MixtureSpec, lid: int, cfg: DataConfig) -> Rows:
    """Language `lid`'s train rows, memory-mapped from the cache (built there first if absent)."""
    stream = line_stream(spec, lid, cfg)
    root = os.path.join(readers.cache_dir(cfg), "rows")
    folder = os.path.join(root, f"{cache_key(stream, spec.vocab, cfg)}-{spec.languages[lid]}")
    if not os.path.exists(os.path.join(folder, "done")):
        if stream.kind == "pairs":
            rows = build_pair_rows(stream.read(), spec.vocab, seq_length=cfg.seq_length)
        else:
            rows = build_mono_rows(stream.read(), spec.vocab, seq_length=cfg.seq_length, mode=cfg.packing)
        if len(rows) == 0:
            raise ValueError(f"data.languages entry {spec.languages[lid]!r}: its train split makes no row")
        tmp = f"{folder}.tmp{os.getpid()}"
        os.makedirs(tmp, exist_ok=True)
        for name in _FILES:
            np.save(os.path.join(tmp, f"{name}.npy"), getattr(rows, name))
        open(os.path.join(tmp, "done"), "w").close()
        try:
            os.rename(tmp, folder)
        except OSError:  # another process built it first: theirs is the same
            shutil.rmtree(tmp, ignore_errors=True)
    return Rows(*(np.load(os.path.join(folder, f"{name}.npy"), mmap_mode="r") for name in _FILES))
