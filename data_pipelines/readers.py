"""Reading the input files: .gz/.xz on the fly, line counts, the held-out rule and local plain-text copies.

Everything goes through `tf.io.gfile`, so gs:// paths work. Copies (decompressed .xz, JSON lines as text, the
sample's splits) go to `data.decompress_dir` (or a temp folder), named by their input so they are made once.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import lzma
import os
import tempfile

import tensorflow as tf

from data_pipelines.config import DataConfig

_READ_CHUNK = 1 << 24


def open_binary(path: str):
    """A binary reader of `path` through gfile, decompressing .gz/.xz on the fly."""
    f = tf.io.gfile.GFile(path, "rb")
    if path.endswith(".gz"):
        return gzip.GzipFile(fileobj=f)
    if path.endswith(".xz"):
        return lzma.LZMAFile(f)
    return f


@functools.lru_cache(maxsize=4096)
def count_lines(path: str) -> int:
    """Number of lines of a (possibly .gz) text file, as tf.data.TextLineDataset sees them. One streamed pass."""
    n, last = 0, b"\n"
    with open_binary(path) as f:
        while chunk := f.read(_READ_CHUNK):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    return n + (last != b"\n")


def iter_lines(path: str):
    """Lines (bytes, without the newline) of a (possibly compressed) file, streamed."""
    rest = b""
    with open_binary(path) as f:
        while chunk := f.read(_READ_CHUNK):
            parts = (rest + chunk).split(b"\n")
            rest = parts.pop()
            yield from parts
    if rest:
        yield rest


def split_range(num_lines: int, split: str) -> tuple[int, int]:
    """[start, end) of `split` in a file of `num_lines` lines: the sample's held-out rule (last 10 % = validation)."""
    from data_pipelines.sample import num_validation

    train = num_lines - num_validation(num_lines)
    if split == "train":
        return 0, train
    if split == "validation":
        return train, num_lines
    raise ValueError(f"split={split!r}: expected 'train' or 'validation'")


def cache_dir(cfg: DataConfig) -> str:
    d = cfg.decompress_dir or os.path.join(tempfile.gettempdir(), "xlmp_data_cache")
    tf.io.gfile.makedirs(d)
    return d


def materialize(
    path: str, cfg: DataConfig, *, jsonl_field: str | None = None, pairs: tuple[str, str] | None = None
) -> str:
    """A local plain-text copy of `path` for what tf.data cannot read directly (.xz, JSON lines), made once.

    JSON documents become their lines followed by a blank line (the CC-100 layout); JSON pairs become
    `src TAB tgt` lines. Unparsable JSON lines are written as one undecodable line, so they are counted.
    """
    key = hashlib.sha1(f"{path}|{jsonl_field}|{pairs}".encode()).hexdigest()[:16]
    out = os.path.join(cache_dir(cfg), f"{key}-{os.path.basename(path).split('.')[0]}.txt")
    if tf.io.gfile.exists(out):
        return out
    tmp = f"{out}.tmp{os.getpid()}"
    with tf.io.gfile.GFile(tmp, "wb") as dst:
        if jsonl_field is None and pairs is None:
            with open_binary(path) as src:
                while chunk := src.read(_READ_CHUNK):
                    dst.write(chunk)
        for raw in iter_lines(path) if jsonl_field is not None or pairs is not None else ():
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
                if pairs is None:
                    text = str(obj[jsonl_field]).replace("\r", "")
                    body = "\n".join(x for x in text.split("\n") if x.strip())
                    dst.write((body + "\n\n").encode("utf-8"))
                else:
                    s, t = (str(obj[k]).replace("\t", " ").replace("\n", " ") for k in pairs)
                    dst.write(f"{s}\t{t}\n".encode())
            except (ValueError, KeyError, TypeError):
                dst.write(b"\xff\n")  # one undecodable line: skipped and counted downstream
    tf.io.gfile.rename(tmp, out, overwrite=True)
    return out


def write_split_file(cfg: DataConfig, name: str, lines: list[str]) -> str:
    """`lines` as a UTF-8 file in the cache folder, named by its content (written once, never stale)."""
    body = "".join(line + "\n" for line in lines).encode("utf-8")
    out = os.path.join(cache_dir(cfg), f"sample-{hashlib.sha1(body).hexdigest()[:16]}-{name}.txt")
    if not tf.io.gfile.exists(out):
        tmp = f"{out}.tmp{os.getpid()}"
        with tf.io.gfile.GFile(tmp, "wb") as f:
            f.write(body)
        tf.io.gfile.rename(tmp, out, overwrite=True)
    return out
