"""Checks of what a run will read, made once at start-up, before TensorFlow builds a pipeline or JAX compiles.

``check_run_data(config)`` looks at every local input of the data block without reading a corpus (the
source-specific checks are each kind's ``preflight`` in ``data_pipelines.sources``, on the helpers here):

* the vocabulary file exists, is a SentencePiece model, and its size (pieces + ``<pad>`` + ``<mask>``) is
  ``model.vocab_size`` exactly. A smaller model would index past its embedding (inside ``jax.jit`` nothing
  checks the ids); a larger one trains rows no token uses, puts ``<mask>`` in the middle of the table and
  makes a checkpoint that ``load_pretrained`` and the export refuse, so both directions are an error;
* each language's files exist and are not empty, and the first record decodes as UTF-8 (for JSON lines:
  is a JSON object holding ``data.text_field``); the first bad file is named with its line;
* a TFDS name (mc4, wiki40b) is one that TFDS knows, looked up in its local registry (no network).

Remote paths (``gs://...``) are left to the readers: they are checked when they are opened. Lines after
a file's first record are the reader's to check as it reads them.
Only the standard library and ``sentencepiece`` are used here (TensorFlow only for a TFDS name), so a bad
input costs a second, not a pipeline build.
"""

from __future__ import annotations

import codecs
import gzip
import json
import lzma
import os
from collections.abc import Iterator
from typing import Any

from data_pipelines.config import DataConfig

_FIRST_RECORD_LIMIT = 1 << 20  # bytes read at most for a first record (a longer first line is checked in part)
# Ids the XLM-R layout adds to the SentencePiece pieces: <pad> (before them) and <mask> (after).
_ADDED_IDS = 2


class DataPreflightError(ValueError):
    """An input a run cannot read; the message names the field, the file and the bad value."""


def is_remote(path: str) -> bool:
    return "://" in path


def vocabulary_size(vocab_path: str) -> int | None:
    """Ids of the XLM-R vocabulary at ``vocab_path`` (SentencePiece pieces + 2); None for a remote path."""
    if is_remote(vocab_path):
        return None
    if not os.path.isfile(vocab_path):
        raise DataPreflightError(f"data.vocab_path={vocab_path!r}: no such file (a SentencePiece .model is needed)")
    import sentencepiece as spm

    try:
        processor = spm.SentencePieceProcessor(model_file=vocab_path)
    except Exception as e:  # noqa: BLE001 -- sentencepiece raises RuntimeError/OSError by failure
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataPreflightError(f"data.vocab_path={vocab_path!r} is not a SentencePiece model ({reason})") from None
    return processor.get_piece_size() + _ADDED_IDS


def check_vocab_size(model_vocab_size: int, vocab_path: str, data_vocab_size: int) -> None:
    """``model.vocab_size`` must equal the data vocabulary's size (see the module docstring for why)."""
    if model_vocab_size < data_vocab_size:
        raise DataPreflightError(
            f"model.vocab_size={model_vocab_size} is smaller than the data vocabulary data.vocab_path={vocab_path!r} "
            f"({data_vocab_size} ids, <mask> = {data_vocab_size - 1}): ids >= {model_vocab_size} would index past "
            f"the embedding; set model.vocab_size={data_vocab_size}"
        )
    if model_vocab_size > data_vocab_size:
        raise DataPreflightError(
            f"model.vocab_size={model_vocab_size} is larger than the data vocabulary data.vocab_path={vocab_path!r} "
            f"({data_vocab_size} ids): <mask> would be id {data_vocab_size - 1} inside a {model_vocab_size}-row "
            f"embedding and the checkpoint would not load with its tokenizer; set model.vocab_size={data_vocab_size} "
            f"or data.vocab_path to a {model_vocab_size}-id SentencePiece model"
        )


# ----------------------------------------------------------------------------------------------------------------
# Local files


def _open(path: str):
    if path.endswith(".gz"):
        return gzip.open(path, "rb")
    if path.endswith(".xz"):
        return lzma.open(path, "rb")
    return open(path, "rb")


def _records(path: str) -> Iterator[tuple[int, bytes]]:
    """(line number, line) of the first lines of ``path``, each cut at ``_FIRST_RECORD_LIMIT`` bytes."""
    try:
        with _open(path) as f:
            number = 0
            while True:
                line = f.readline(_FIRST_RECORD_LIMIT)
                if not line:
                    return
                number += 1
                yield number, line.rstrip(b"\r\n")
    except (OSError, EOFError, lzma.LZMAError) as e:
        raise DataPreflightError(f"{path}: cannot be read ({e})") from None


def _decode(path: str, number: int, line: bytes) -> str:
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:  # final=False: a first line cut at the limit may end inside a character
        return decoder.decode(line, final=len(line) < _FIRST_RECORD_LIMIT)
    except UnicodeDecodeError as e:
        raise DataPreflightError(
            f"{path}:{number}: not UTF-8 text (byte {line[e.start : e.start + 1]!r} at offset {e.start} of the line)"
        ) from None


def check_text_file(path: str) -> None:
    """Not empty, and its first line is UTF-8."""
    for number, line in _records(path):
        _decode(path, number, line)
        return
    raise DataPreflightError(f"{path}: the file is empty")


def check_jsonl_file(path: str, text_field: str) -> None:
    """Not empty, and its first non-blank line is a UTF-8 JSON object with ``text_field``."""
    for number, line in _records(path):
        text = _decode(path, number, line)
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except ValueError as e:
            raise DataPreflightError(f"{path}:{number}: not a JSON object ({e})") from None
        if not isinstance(record, dict):
            raise DataPreflightError(f"{path}:{number}: not a JSON object (a {type(record).__name__})")
        if text_field not in record:
            raise DataPreflightError(
                f"{path}:{number}: no key data.text_field={text_field!r} (keys: {sorted(record)[:10]})"
            )
        return
    raise DataPreflightError(f"{path}: the file is empty (no JSON line)")


def local_data_path(path: str) -> bool:
    """Whether the file checks apply to ``data.path``: not for a remote one (left to the readers); a local one
    without ``{lang}`` must be a folder."""
    if is_remote(path):
        return False
    if "{lang}" not in path and not os.path.isdir(path):
        raise DataPreflightError(f"data.path={path!r} does not exist (or is not a folder)")
    return True


# ----------------------------------------------------------------------------------------------------------------
# TFDS


def check_tfds_name(name: str, field: str) -> None:
    """``name`` (``dataset[/config][:version]``) is a dataset TFDS knows, with that config (local registry)."""
    from xlmp_jax.runtime import console

    console.import_tensorflow(hide_gpus=True)  # TFDS imports TensorFlow: keep it off the GPUs and quiet
    import tensorflow_datasets as tfds

    dataset, _, config = name.partition(":")[0].partition("/")
    try:
        builder = tfds.builder_cls(dataset)
    except Exception as e:  # noqa: BLE001 -- DatasetNotFoundError and friends
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataPreflightError(f"{field}={name!r}: TFDS has no dataset {dataset!r} ({first})") from None
    configs = [c.name for c in getattr(builder, "BUILDER_CONFIGS", None) or ()]
    if config and configs and config not in configs:
        raise DataPreflightError(
            f"{field}={name!r}: TFDS dataset {dataset!r} has no config {config!r} (has: {configs[:12]}...)"
        )


def check_prepared(cfg: DataConfig) -> None:
    """A prepared folder's manifest against the run: vocabulary, seq_length, packing and languages."""
    from data_pipelines import dataset, prepare, shards

    try:
        dataset.PreparedData(cfg.prepared_dir, cfg, prepare.vocab_sha256(cfg.vocab_path))
    except (shards.PreparedDataError, ValueError) as e:
        raise DataPreflightError(str(e)) from None


def check_data(cfg: DataConfig, model_vocab_size: int | None = None) -> None:
    """Every check of this module on a data block; ``model_vocab_size`` adds the vocabulary size check."""
    size = vocabulary_size(cfg.vocab_path)
    if size is not None and model_vocab_size is not None:
        check_vocab_size(model_vocab_size, cfg.vocab_path, size)
    from data_pipelines import dataset, sources

    if cfg.prepared_dir and dataset.has_manifest(cfg.prepared_dir):
        check_prepared(cfg)
    else:
        sources.get(cfg.source).preflight(cfg)


def check_run_data(run: Any) -> None:
    """``check_data`` on a run's data block, against its ``model.vocab_size``: ``run`` is the resolved run
    (``xlmp_jax.run_config.RunConfig``, whose field values are already checked)."""
    check_data(run.data, run.model.vocab_size)
