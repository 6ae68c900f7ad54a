"""Where each language's lines come from, as plain picklable specs (`Input`) and the readers of their lines.

`inputs(cfg)` lists one `Input` per language entry and split (MLM languages, then TLM pairs `en-<lang>`); the
MLM ones come from the `data.source` kind's module (`data_pipelines.sources`). `read_lines(input)` yields its
`(where, line bytes)` stream: the lines the row packing sees, in order. Readers are keyed by `Input.reader`, not
by source kind, as TLM pairs share them. Specs carry everything a reader needs (paths, fields, TFDS names), so an
Apache Beam worker, a fresh interpreter, reads them without the config that made them. TensorFlow is imported
only by the readers that need it (TFRecord, TFDS, gs:// paths).

Held-out rule for local files (as for the sample): the last 10 % of each file's lines is `validation`.
JSON lines count as the text they hold: a document's non-blank lines then a blank line (the CC-100 layout);
pairs as `src TAB tgt`. A JSON line that does not parse becomes one undecodable line, named when packed.
"""

from __future__ import annotations

import dataclasses
import glob
import gzip
import hashlib
import json
import lzma
import os
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # config imports the source registry, whose modules import this one
    from data_pipelines.config import DataConfig

SPLITS = ("train", "validation")
_READ_CHUNK = 1 << 24
_WIKI40B_MARKERS = re.compile(rb"_START_ARTICLE_|_START_SECTION_|_START_PARAGRAPH_|_NEWLINE_")
_ASCII_SPACE = b" \t\n\r\x0b\x0c"
READERS = ("text", "jsonl", "jsonl_pairs", "sample", "sample_pairs", "tfrecord", "tfds")


@dataclasses.dataclass(frozen=True)
class Input:
    """One split of one language entry: how to read its lines (handed as is to pipeline workers)."""

    entry: str  # 'de', or 'en-de' for TLM pairs
    split: str  # 'train' | 'validation'
    kind: str  # 'lines' (MLM rows) | 'pairs' (TLM rows)
    reader: str  # one of READERS
    paths: tuple[str, ...] = ()  # files (text/jsonl/tfrecord), or the sample language for sample readers
    field: str = ""  # jsonl/tfrecord: the text field; jsonl_pairs: 'src_key,tgt_key'
    tfds_name: str = ""
    tfds_split: str = ""
    tfds_data_dir: str = ""
    wiki40b: bool = False

    @property
    def name(self) -> str:
        return f"{self.entry}-{self.split}"


# ----------------------------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------------------------
def _is_local(path: str) -> bool:
    return "://" not in path


def _open(path: str):
    if _is_local(path):
        return open(path, "rb")
    import tensorflow as tf

    return tf.io.gfile.GFile(path, "rb")


def open_binary(path: str):
    """A binary reader of `path` (local, or gs:// through gfile), decompressing .gz/.xz on the fly."""
    f = _open(path)
    if path.endswith(".gz"):
        return gzip.GzipFile(fileobj=f)
    if path.endswith(".xz"):
        return lzma.LZMAFile(f)
    return f


def glob_files(pattern: str) -> list[str]:
    """Sorted matches of `pattern`, local or gs:// (TensorFlow only for the latter)."""
    if _is_local(pattern):
        return sorted(glob.glob(pattern))
    import tensorflow as tf

    return sorted(tf.io.gfile.glob(pattern))


def is_dir(path: str) -> bool:
    """Whether `path` is a folder, local or gs://."""
    if _is_local(path):
        return os.path.isdir(path)
    import tensorflow as tf

    return tf.io.gfile.isdir(path)


def file_key(path: str) -> str:
    """Path, size and modification time: what says a prepared input is still the file it was made from."""
    if _is_local(path):
        st = os.stat(path)
        return f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}"
    import tensorflow as tf

    st = tf.io.gfile.stat(path)
    return f"{path}|{st.length}|{st.mtime_nsec}"


def _chunks(path: str) -> Iterator[bytes]:
    with open_binary(path) as f:
        while chunk := f.read(_READ_CHUNK):
            yield chunk


def _jsonl_chunks(path: str, field: str) -> Iterator[bytes]:
    """The text a JSON-lines file holds, in the CC-100 layout (see the module docstring), chunk by chunk."""
    for raw in _split_lines(_chunks(path)):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
            if "," in field:
                s, t = (str(obj[k]).replace("\t", " ").replace("\n", " ") for k in field.split(",", 1))
                yield f"{s}\t{t}\n".encode()
            else:
                text = str(obj[field]).replace("\r", "")
                body = "\n".join(x for x in text.split("\n") if x.strip())
                yield (body + "\n\n").encode("utf-8")
        except (ValueError, KeyError, TypeError):
            yield b"\xff\n"  # one undecodable line: named when packed


def _split_lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Lines (without the newline) of a byte stream, as a text-line reader splits them."""
    rest = b""
    for chunk in chunks:
        parts = (rest + chunk).split(b"\n")
        rest = parts.pop()
        yield from parts
    if rest:
        yield rest


def _text_chunks(inp: Input, path: str) -> Iterator[bytes]:
    return _chunks(path) if inp.reader == "text" else _jsonl_chunks(path, inp.field)


def num_validation(num_lines: int) -> int:
    from data_pipelines.sample import num_validation as rule

    return rule(num_lines)


def _count_lines(chunks: Iterator[bytes]) -> int:
    n, last = 0, b"\n"
    for chunk in chunks:
        n += chunk.count(b"\n")
        last = chunk[-1:]
    return n + (last != b"\n")


def _file_lines(inp: Input) -> Iterator[tuple[str, bytes]]:
    """The split's lines of each file: one pass to count a file's lines (the held-out rule needs the count;
    a compressed stream cannot be entered in the middle), one to read its range."""
    for path in inp.paths:
        n = _count_lines(_text_chunks(inp, path))
        if n == 0:
            raise ValueError(f"empty input file: {path!r}")
        train = n - num_validation(n)
        a, b = (0, train) if inp.split == "train" else (train, n)
        shown = path if inp.reader == "text" else f"{path} (as text lines)"
        for i, line in enumerate(_split_lines(_text_chunks(inp, path))):
            if i >= b:
                break
            if i >= a:
                yield f"{shown}:{i + 1}", line[:-1] if line.endswith(b"\r") else line


def _document_lines(docs: Iterator[tuple[str, bytes]], wiki40b: bool) -> Iterator[tuple[str, bytes]]:
    """Documents -> their non-blank lines, then an empty boundary line."""
    for where, text in docs:
        if wiki40b:
            text = _WIKI40B_MARKERS.sub(b"\n", text)
        for j, line in enumerate(text.split(b"\n")):
            if line.strip(_ASCII_SPACE):
                yield f"{where} line {j + 1}", line
        yield where, b""


def _tfrecord_documents(inp: Input) -> Iterator[tuple[str, bytes]]:
    import tensorflow as tf

    for f in inp.paths:
        for i, rec in enumerate(tf.data.TFRecordDataset(f).as_numpy_iterator()):
            ex = tf.train.Example.FromString(rec)
            yield f"{f} record {i + 1}", ex.features.feature[inp.field].bytes_list.value[0]


def _tfds_documents(inp: Input) -> Iterator[tuple[str, bytes]]:
    """A TFDS split's `text`, in order: random-access `tfds.data_source` when the dataset was prepared as
    array_record, else one sequential pass through tf.data."""
    import tensorflow_datasets as tfds

    name, split, data_dir = inp.tfds_name, inp.tfds_split, inp.tfds_data_dir or None
    try:
        builder = tfds.builder(name, data_dir=data_dir)
        available = set(builder.info.splits.keys())
    except Exception as e:  # TFDS raises several types for a missing dataset/config
        raise ValueError(
            f"data.languages entry {inp.entry!r}: TFDS dataset {name!r} not found in "
            f"data.tfds_data_dir={inp.tfds_data_dir!r} ({type(e).__name__}: {e})"
        ) from e
    if split not in available:
        raise ValueError(
            f"data.languages entry {inp.entry!r}: TFDS {name!r} has no split {split!r} (has: {sorted(available)[:20]})"
        )
    fmt = str(getattr(builder.info, "file_format", "") or "").lower()
    if "array_record" in fmt:
        source = tfds.data_source(name, split=split, data_dir=data_dir)
        for i in range(len(source)):
            yield f"tfds {name}[{split}] #{i}", source[i]["text"]
        return
    ds = builder.as_dataset(split=split, shuffle_files=False)
    for i, ex in enumerate(ds.as_numpy_iterator()):
        yield f"tfds {name}[{split}] #{i}", ex["text"]


def _sample_lines(inp: Input) -> Iterator[tuple[str, bytes]]:
    from data_pipelines import sample

    (lang,) = inp.paths
    if inp.reader == "sample":
        lines = sample.read_mono(lang, inp.split)
    else:
        lines = [f"{en}\t{other}" for en, other in sample.read_parallel(lang, inp.split)]
    body = "".join(line + "\n" for line in lines).encode("utf-8")
    for i, line in enumerate(body.split(b"\n")[:-1]):
        yield f"sample {inp.name}:{i + 1}", line[:-1] if line.endswith(b"\r") else line


def read_lines(inp: Input) -> Iterator[tuple[str, bytes]]:
    """`(where, line)` of the input's split, in order: the stream its rows are packed from."""
    if inp.reader in ("text", "jsonl", "jsonl_pairs"):
        return _file_lines(inp)
    if inp.reader in ("sample", "sample_pairs"):
        return _sample_lines(inp)
    if inp.reader == "tfrecord":
        return _document_lines(_tfrecord_documents(inp), False)
    if inp.reader == "tfds":
        return _document_lines(_tfds_documents(inp), inp.wiki40b)
    raise ValueError(f"input {inp.name}: unknown reader {inp.reader!r} (known: {READERS})")


def examples(inp: Input, lines: int, documents: int) -> int:
    """n_l for temperature sampling: lines for line inputs, documents for document inputs."""
    return documents if inp.reader in ("tfrecord", "tfds") else lines


def fingerprint(inp: Input) -> str:
    """What the input is: its spec plus each file's path, size and modification time (TFDS: name and split;
    the sample: its mono and parallel folders and transfer file, as any of them moves the held-out rule)."""
    keys = [file_key(p) for p in inp.paths] if inp.reader in ("text", "jsonl", "jsonl_pairs", "tfrecord") else []
    if inp.reader in ("sample", "sample_pairs"):  # the held-out rule reads mono, parallel and the transfer task
        from data_pipelines import sample

        paths = [os.path.join(sample.SAMPLE_DIR, "mono"), os.path.join(sample.SAMPLE_DIR, "parallel")]
        paths += [p for p in (sample.transfer_path(),) if os.path.isfile(p)]
        keys = [file_key(p) for p in paths]
    blob = json.dumps([dataclasses.asdict(inp), keys], sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:20]


# ----------------------------------------------------------------------------------------------------------------
# A data config -> its inputs
# ----------------------------------------------------------------------------------------------------------------
def _pair_field(path: str, lang: str) -> str:
    for raw in _split_lines(_chunks(path)):
        first = json.loads(raw)
        for keys in (("en", lang), ("src", "tgt"), ("source", "target")):
            if all(k in first for k in keys):
                return ",".join(keys)
        raise ValueError(f"{path!r}: JSON pairs need keys ('en', {lang!r}) or ('src', 'tgt'); got {sorted(first)}")
    raise ValueError(f"empty input file: {path!r}")


def _pair_inputs(cfg: DataConfig, lang: str) -> list[Input]:
    base = dict(entry=f"en-{lang}", kind="pairs")
    if not cfg.parallel_path:
        from data_pipelines import sample

        if lang not in sample.parallel_languages():
            raise ValueError(
                f"data.parallel_languages entry {lang!r} has no sample pairs (has: {sample.parallel_languages()})"
            )
        return [Input(**base, split=s, reader="sample_pairs", paths=(lang,)) for s in SPLITS]
    if not is_dir(cfg.parallel_path):
        raise FileNotFoundError(f"data.parallel_path={cfg.parallel_path!r} does not exist (or is not a folder)")
    tsv = glob_files(os.path.join(cfg.parallel_path, f"en-{lang}.tsv*"))
    jsonl = glob_files(os.path.join(cfg.parallel_path, f"en-{lang}.jsonl*"))
    if not tsv and not jsonl:
        raise FileNotFoundError(
            f"data.parallel_languages entry {lang!r}: no en-{lang}.tsv or en-{lang}.jsonl in "
            f"data.parallel_path={cfg.parallel_path!r}"
        )
    if tsv:
        return [Input(**base, split=s, reader="text", paths=tuple(tsv)) for s in SPLITS]
    field = _pair_field(jsonl[0], lang)
    return [Input(**base, split=s, reader="jsonl_pairs", paths=tuple(jsonl), field=field) for s in SPLITS]


def mono_languages(cfg: DataConfig) -> list[str]:
    """`data.languages`, or every language the source has when it is empty (none for TFDS sources)."""
    from data_pipelines import sources

    return list(cfg.languages) if cfg.languages else sources.get(cfg.source).languages(cfg)


def parallel_languages(cfg: DataConfig) -> list[str]:
    """The TLM pairs of `cfg` (none when `tlm_rate` is 0)."""
    if cfg.tlm_rate <= 0:
        return []
    if cfg.parallel_languages:
        return list(cfg.parallel_languages)
    if not cfg.parallel_path:
        from data_pipelines import sample

        return list(sample.parallel_languages())
    names = [os.path.basename(p) for p in glob_files(os.path.join(cfg.parallel_path, "en-*"))]
    return sorted({n[3:].split(".")[0] for n in names})


def inputs(cfg: DataConfig) -> list[Input]:
    """Every (language entry, split) of `cfg`: MLM languages, then TLM pairs, train before validation."""
    from data_pipelines import sources

    mono = mono_languages(cfg)
    if not mono:
        raise ValueError(
            f"data.languages={tuple(cfg.languages)!r} gives an empty mixture for data.source={cfg.source!r}"
            f" (data.path={cfg.path!r})"
        )
    pairs = [i for lang in parallel_languages(cfg) for i in _pair_inputs(cfg, lang)]
    source = sources.get(cfg.source)
    return [i for lang in mono for i in source.mono_inputs(cfg, lang)] + pairs
