"""Checks of what a run will read, made once at start-up, before TensorFlow builds a pipeline or JAX compiles.

``check_run_data(config)`` looks at every local input of the data block without reading a corpus:

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
import glob
import gzip
import json
import lzma
import os
from collections.abc import Iterator
from typing import Any

import ml_collections

from data_pipelines.config import JSONL_EXTENSIONS, TEXT_EXTENSIONS, DataConfig

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


def _languages(cfg: DataConfig) -> list[str]:
    """``data.languages``, or those the folder holds (as the readers find them)."""
    if cfg.languages:
        return list(cfg.languages)
    if "{lang}" in cfg.path or cfg.source == "tfrecord":
        return []
    exts = JSONL_EXTENSIONS if cfg.source == "jsonl" else TEXT_EXTENSIONS
    langs = {n[: -len(e)] for n in os.listdir(cfg.path) for e in exts if n.endswith(e)}
    if not langs:
        raise DataPreflightError(
            f"data.path={cfg.path!r} holds no <lang>{'/<lang>'.join(exts)} file for data.source={cfg.source!r}"
        )
    return sorted(langs)


def language_files(cfg: DataConfig, lang: str) -> list[str]:
    """The local files of ``lang`` for a text, cc100 or jsonl source (the readers' rule)."""
    exts = JSONL_EXTENSIONS if cfg.source == "jsonl" else TEXT_EXTENSIONS
    if "{lang}" in cfg.path:
        pattern = cfg.path.replace("{lang}", lang)
        files = sorted(glob.glob(pattern))
        if not files:
            raise DataPreflightError(
                f"data.languages entry {lang!r}: nothing matches {pattern!r} (data.path={cfg.path!r})"
            )
        return files
    for ext in exts:
        files = sorted(glob.glob(os.path.join(glob.escape(cfg.path), lang + ext)))
        if files:
            return files
    raise DataPreflightError(
        f"data.languages entry {lang!r}: no {'/'.join(lang + e for e in exts)} in data.path={cfg.path!r}"
    )


def check_local_files(cfg: DataConfig) -> None:
    """Every language's files of a local text, cc100, jsonl or tfrecord source."""
    if is_remote(cfg.path):
        return
    if "{lang}" not in cfg.path and not os.path.isdir(cfg.path):
        raise DataPreflightError(f"data.path={cfg.path!r} does not exist (or is not a folder)")
    if cfg.source == "tfrecord":
        for lang in cfg.languages:
            pattern = (
                cfg.path.replace("{lang}", lang).replace("{split}", "train")
                if "{lang}" in cfg.path
                else os.path.join(cfg.path, f"{lang}-train.tfrecord*")
            )
            files = sorted(glob.glob(pattern))
            if not files:
                raise DataPreflightError(f"data.languages entry {lang!r}: nothing matches {pattern!r}")
            for f in files:
                if os.path.getsize(f) == 0:
                    raise DataPreflightError(f"{f}: the file is empty")
        return
    for lang in _languages(cfg):
        for f in language_files(cfg, lang):
            if cfg.source == "jsonl":
                check_jsonl_file(f, cfg.text_field)
            else:
                check_text_file(f)


# ----------------------------------------------------------------------------------------------------------------
# TFDS


def check_tfds_name(name: str, field: str) -> None:
    """``name`` (``dataset[/config][:version]``) is a dataset TFDS knows, with that config (local registry)."""
    from xlmp_jax import console

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


def check_tfds(cfg: DataConfig) -> None:
    if cfg.source == "mc4":
        check_tfds_name(cfg.mc4_tfds_name, "data.mc4_tfds_name")
    elif cfg.source == "wiki40b":
        for lang in cfg.languages:
            check_tfds_name(cfg.wiki40b_tfds_name.replace("{lang}", lang), "data.wiki40b_tfds_name")


# ----------------------------------------------------------------------------------------------------------------


def check_sample_languages(cfg: DataConfig) -> None:
    from data_pipelines import sample

    have = sample.languages()
    bad = [lang for lang in cfg.languages if lang not in have]
    if bad:
        raise DataPreflightError(f"data.languages entry {bad[0]!r} is not in the sample (has: {have})")


def check_prepared(cfg: DataConfig) -> None:
    """A prepared folder's manifest against the run: vocabulary, seq_length, packing and languages."""
    from data_pipelines import dataset, prepare, shards

    try:
        dataset.PreparedData(cfg.prepared_dir, cfg, prepare.vocab_sha256(cfg.vocab_path))
    except (shards.PreparedDataError, ValueError) as e:
        raise DataPreflightError(str(e)) from None


def check_data(cfg: DataConfig | ml_collections.ConfigDict, model_vocab_size: int | None = None) -> None:
    """Every check of this module on a data block; ``model_vocab_size`` adds the vocabulary size check."""
    try:
        cfg = DataConfig.of(cfg)
    except ValueError as e:
        raise DataPreflightError(str(e)) from None
    size = vocabulary_size(cfg.vocab_path)
    if size is not None and model_vocab_size is not None:
        check_vocab_size(model_vocab_size, cfg.vocab_path, size)
    from data_pipelines import dataset

    if cfg.prepared_dir and dataset.has_manifest(cfg.prepared_dir):
        check_prepared(cfg)
    elif cfg.source == "sample":
        check_sample_languages(cfg)
    elif cfg.source in ("text", "cc100", "jsonl", "tfrecord"):
        check_local_files(cfg)
    else:
        check_tfds(cfg)


def check_run_data(config: Any) -> None:
    """``check_data`` on a run's data block, against its ``model.vocab_size``: ``config`` is the trainer's
    resolved run (``xlmp_jax.run_config.RunConfig``) or a loaded ConfigDict (both have ``.data``, ``.model``)."""
    check_data(config.data, config.model.vocab_size)
