"""Tokenise and pack a data config's corpus into ArrayRecord shards with Apache Beam (`data_pipelines.shards`).

    python -m data_pipelines.prepare --config=configs/base.py --out=DIR [--config.data.*=...]
        [--runner=DirectRunner --direct_num_workers=2 --direct_running_mode=multi_processing | Dataflow's options]

Three stages, so that only small per-unit metadata crosses a stage boundary and memory does not grow with the
corpus:
1. split: one sequential pass over each language's split (a compressed stream cannot be entered in the middle)
   cuts its lines into work units of whole packing blocks (`packing.block_lines`), written as line files under
   `DIR/_work/`. Rows never cross a block, so each unit packs on its own into the rows the whole stream gives.
2. pack: each unit is tokenised, packed and written as one shard (temporary name, then rename) by one DoFn.
3. manifest: rows per shard, input fingerprints, the vocabulary's sha256, seq_length, packing and the
   `stat_*` counters, written last (a prepare that dies leaves no manifest a trainer accepts).
Shards are byte-identical whatever the number of workers. Options this module does not know go to Beam as is.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence

import numpy as np

from data_pipelines import line_sources, packing, shards
from data_pipelines.config import DataConfig
from data_pipelines.line_sources import Input

VERSION = 1
WORK = "_work"
DEFAULT_UNIT_LINES = 65536  # lines per work unit (rounded up to whole packing blocks): ~5-10 MB of web text


@dataclasses.dataclass(frozen=True)
class Settings:
    """What every worker needs besides its unit (picklable)."""

    out: str
    vocab_path: str
    seq_length: int
    packing: str
    unit_lines: int


@dataclasses.dataclass(frozen=True)
class Unit:
    """Lines [first, first + lines) of an input's stream, saved in `path` by the split stage."""

    input: Input
    index: int
    count: int  # units of this input
    path: str
    lines: int
    examples: int  # of the whole input (n_l)
    fingerprint: str  # of the whole input


def unit_lines(settings: Settings, kind: str) -> int:
    """Lines per unit: whole packing blocks for line inputs (pairs have no blocks)."""
    if kind == "pairs":
        return settings.unit_lines
    block = packing.block_lines(settings.seq_length)
    return -(-settings.unit_lines // block) * block


# ----------------------------------------------------------------------------------------------------------------
# Files (local, or gs:// through gfile: the ArrayRecord writer writes local files only)
# ----------------------------------------------------------------------------------------------------------------
def _makedirs(path: str) -> None:
    if shards.is_remote(path):
        import tensorflow as tf

        tf.io.gfile.makedirs(path)
    else:
        os.makedirs(path, exist_ok=True)


def _publish(local: str, dest: str) -> None:
    """Moves a finished local file to `dest` under a temporary name first, so `dest` is whole or absent."""
    if shards.is_remote(dest):
        import tensorflow as tf

        tf.io.gfile.copy(local, dest + ".tmp", overwrite=True)
        tf.io.gfile.rename(dest + ".tmp", dest, overwrite=True)
        os.remove(local)
    else:
        os.replace(local, dest)


def _local_tmp(dest: str) -> str:
    if shards.is_remote(dest):
        fd, path = tempfile.mkstemp(suffix=".tmp")
        os.close(fd)
        return path
    return f"{dest}.tmp{os.getpid()}"


def _read_bytes(path: str) -> bytes:
    with line_sources.open_binary(path) as f:
        return f.read()


def remove_tree(path: str) -> None:
    """Removes a file or folder (local or gs://) if it exists."""
    if shards.is_remote(path):
        import tensorflow as tf

        if tf.io.gfile.exists(path):
            tf.io.gfile.rmtree(path) if tf.io.gfile.isdir(path) else tf.io.gfile.remove(path)
    elif os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.exists(path):
        os.remove(path)


# ----------------------------------------------------------------------------------------------------------------
# The stages, as plain functions (the DoFns below only call them)
# ----------------------------------------------------------------------------------------------------------------
def split_input(inp: Input, settings: Settings) -> list[Unit]:
    """Stage 1: the input's lines, checked to be UTF-8, cut into unit files of `unit_lines` lines."""
    per = unit_lines(settings, inp.kind)
    work = os.path.join(settings.out, WORK)
    fingerprint = line_sources.fingerprint(inp)
    saved: list[tuple[str, int]] = []
    buf: list[bytes] = []
    lines = documents = 0

    def flush() -> None:
        dest = os.path.join(work, f"{inp.name}-{len(saved):05d}.lines")
        tmp = _local_tmp(dest)
        with open(tmp, "wb") as f:
            f.write(b"".join(x + b"\n" for x in buf))
        _publish(tmp, dest)
        saved.append((dest, len(buf)))
        buf.clear()

    for where, line in line_sources.read_lines(inp):
        packing.decode_line(where, line)
        buf.append(line)
        lines += 1
        documents += line == b""
        if len(buf) >= per and (inp.kind == "lines" or _whole_pair(line)):
            flush()
    if buf or not saved:
        flush()
    examples = line_sources.examples(inp, lines, documents)
    return [Unit(inp, i, len(saved), path, n, examples, fingerprint) for i, (path, n) in enumerate(saved)]


def _whole_pair(line: bytes) -> bool:
    """A `src TAB tgt` line with both sides: a pairs unit ends after one, so that the count of malformed lines
    carried to the next row (`packing.build_pair_rows`) never crosses a unit."""
    src, tab, tgt = line.partition(b"\t")
    return bool(tab and src.strip(packing.ASCII_SPACE_BYTES) and tgt.strip(packing.ASCII_SPACE_BYTES))


def pack_unit(unit: Unit, settings: Settings, vocab) -> dict:
    """Stage 2: one unit's lines -> its shard of rows; returns the shard's metadata."""
    data = _read_bytes(unit.path)
    lines = data.split(b"\n")[:-1] if data else []
    stream = ((f"{unit.input.name} unit {unit.index} line {j + 1}", x) for j, x in enumerate(lines))
    if unit.input.kind == "pairs":
        rows = packing.build_pair_rows(stream, vocab, seq_length=settings.seq_length)
    else:
        rows = packing.build_mono_rows(stream, vocab, seq_length=settings.seq_length, mode=settings.packing)
    name = shards.shard_name(unit.input.entry, unit.input.split, unit.index, unit.count)
    dest = os.path.join(settings.out, name)
    tmp = _local_tmp(dest)
    from array_record.python.array_record_module import ArrayRecordWriter

    writer = ArrayRecordWriter(tmp, shards.RECORD_OPTIONS)
    for i in range(len(rows)):
        ids = rows.ids[rows.offsets[i] : rows.offsets[i + 1]]
        writer.write(shards.encode_row(ids, int(rows.restart[i]), rows.stats[i]))
    writer.close()
    size = os.path.getsize(tmp)
    _publish(tmp, dest)  # the unit's line file stays until the manifest: a retried bundle reads it again
    return {
        "entry": unit.input.entry,
        "split": unit.input.split,
        "kind": unit.input.kind,
        "index": unit.index,
        "count": unit.count,
        "file": name,
        "rows": len(rows),
        "bytes": size,
        "lines": unit.lines,
        "tokens": int(rows.offsets[-1]),
        "stats": rows.stats.sum(0).astype(int).tolist(),
        "examples": unit.examples,
        "fingerprint": unit.fingerprint,
        "input": dataclasses.asdict(unit.input),
    }


def manifest_of(metas: Sequence[dict], settings: Settings, entries: Sequence[str], vocab_sha256: str) -> dict:
    """Stage 3's content: every entry's splits with their shards, in stream order."""
    by_split: dict[tuple[str, str], list[dict]] = {}
    for m in metas:
        by_split.setdefault((m["entry"], m["split"]), []).append(m)
    splits = []
    for entry in entries:
        for split in line_sources.SPLITS:
            units = sorted(by_split.get((entry, split), []), key=lambda m: m["index"])
            if not units or len(units) != units[0]["count"]:
                raise RuntimeError(f"prepare: {entry} {split} has {len(units)} of its units: a stage lost some")
            rows = sum(u["rows"] for u in units)
            if split == "train" and rows == 0:
                raise ValueError(f"data.languages entry {entry!r}: its train split makes no row")
            splits.append({
                "entry": entry, "split": split, "kind": units[0]["kind"], "examples": units[0]["examples"],
                "rows": rows, "lines": sum(u["lines"] for u in units), "tokens": sum(u["tokens"] for u in units),
                "stats": np.sum([u["stats"] for u in units], 0).astype(int).tolist(),
                "fingerprint": units[0]["fingerprint"], "input": units[0]["input"],
                "shards": [{"file": u["file"], "rows": u["rows"], "bytes": u["bytes"]} for u in units],
            })  # fmt: skip
    return {
        "format": shards.FORMAT,
        "version": VERSION,
        "seq_length": settings.seq_length,
        "packing": settings.packing,
        "vocab": {"path": settings.vocab_path, "sha256": vocab_sha256},
        "entries": list(entries),
        "stat_keys": list(packing.STAT_KEYS),
        "splits": splits,
    }


def write_manifest(manifest: dict, out: str) -> None:
    dest = os.path.join(out, shards.MANIFEST)
    tmp = _local_tmp(dest)
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
    _publish(tmp, dest)
    remove_tree(os.path.join(out, WORK))


def vocab_sha256(path: str) -> str:
    return hashlib.sha256(_read_bytes(path)).hexdigest()


# ----------------------------------------------------------------------------------------------------------------
# The Beam pipeline
# ----------------------------------------------------------------------------------------------------------------
class _NoApitoolsWarning(logging.Filter):
    """Beam warns at import that Google Cloud's client libraries are absent; nothing here needs them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "apitools not found" not in record.getMessage()


def _import_beam():
    quiet = _NoApitoolsWarning()
    logging.getLogger().addFilter(quiet)
    try:
        import apache_beam as beam
    finally:
        logging.getLogger().removeFilter(quiet)
    return beam


def _pipeline(p, inputs: Sequence[Input], settings: Settings, entries: Sequence[str], sha: str):
    beam = _import_beam()

    class Split(beam.DoFn):
        def process(self, inp: Input) -> Iterator[Unit]:
            yield from split_input(inp, settings)

    class Pack(beam.DoFn):
        def setup(self) -> None:
            from data_pipelines.vocab import XLMRVocabulary

            self.vocab = XLMRVocabulary(settings.vocab_path)

        def process(self, unit: Unit) -> Iterator[dict]:
            yield pack_unit(unit, settings, self.vocab)

    metas = (
        p
        | "inputs" >> beam.Create(list(inputs))
        | "spread inputs" >> beam.Reshuffle()
        | "split into units" >> beam.ParDo(Split())
        | "spread units" >> beam.Reshuffle()
        | "tokenise and pack" >> beam.ParDo(Pack())
    )
    _ = (
        metas
        | "gather metadata" >> beam.combiners.ToList()
        | "write manifest" >> beam.Map(lambda ms: write_manifest(manifest_of(ms, settings, entries, sha), settings.out))
    )


def prepare(
    cfg: DataConfig,
    out: str,
    beam_args: Sequence[str] = (),
    *,
    unit_lines: int = DEFAULT_UNIT_LINES,
    inputs: Sequence[line_sources.Input] | None = None,
) -> dict:
    """Prepares `cfg`'s corpus into `out` (see the module docstring) and returns the manifest; `inputs` are the
    corpus's (`line_sources.inputs(cfg)`) when the caller listed them already."""
    beam = _import_beam()
    from apache_beam.options.pipeline_options import PipelineOptions

    if unit_lines < 1:
        raise ValueError(f"--unit_lines={unit_lines}: expected lines per work unit >= 1")
    inputs = line_sources.inputs(cfg) if inputs is None else list(inputs)
    entries = list(dict.fromkeys(i.entry for i in inputs))
    _makedirs(out)
    remove_tree(os.path.join(out, shards.MANIFEST))  # shards about to be rewritten: no manifest may point at them
    remove_tree(os.path.join(out, WORK))
    _makedirs(os.path.join(out, WORK))
    settings = Settings(out, cfg.vocab_path, cfg.seq_length, cfg.packing, unit_lines)
    sha = vocab_sha256(cfg.vocab_path)
    options = PipelineOptions(list(beam_args) or ["--runner=DirectRunner"])
    with beam.Pipeline(options=options) as p:
        _pipeline(p, inputs, settings, entries, sha)
    return shards.read_manifest(out)


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI: `--config` and `--config.*` as the trainer takes them, `--out`, `--unit_lines`; the rest is Beam's."""
    from absl import flags
    from ml_collections import config_flags

    argv = list(sys.argv if argv is None else argv)
    ours, beam_args = [argv[0]], []
    for a in argv[1:]:
        (ours if a.startswith(("--config", "--out", "--unit_lines")) else beam_args).append(a)
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "run config file", flag_values=fv, lock_config=False)
    flags.DEFINE_string("out", None, "folder (or gs:// path) for the shards and manifest", flag_values=fv)
    flags.DEFINE_integer("unit_lines", DEFAULT_UNIT_LINES, "lines per work unit", flag_values=fv)
    fv(ours)
    if not fv.out or fv.config is None:
        print("usage: python -m data_pipelines.prepare --config=CONFIG --out=DIR [--config.*=...] [Beam options]")
        return 2
    start = time.time()
    try:
        cfg = DataConfig.from_section(fv.config.data)
        manifest = prepare(cfg, fv.out, beam_args, unit_lines=fv.unit_lines)
    except (ValueError, FileNotFoundError) as e:  # bad settings or input, named by the message: no traceback
        print(f"data_pipelines.prepare: {e}", file=sys.stderr)
        return 1
    train = [s for s in manifest["splits"] if s["split"] == "train"]
    rows, tokens = sum(s["rows"] for s in train), sum(s["tokens"] for s in train)
    print(
        f"prepared {len(manifest['entries'])} language entries into {fv.out}: {rows} train rows, {tokens} tokens, "
        f"{sum(len(s['shards']) for s in manifest['splits'])} shards in {time.time() - start:.1f} s"
    )
    return 0


if __name__ == "__main__":  # run the module's own copy, so Beam pickles `data_pipelines.prepare.Unit`, not __main__'s
    from data_pipelines import prepare as _module

    sys.exit(_module.main())
