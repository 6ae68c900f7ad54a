"""Golden fingerprints of the training rows on small fixtures, for every source kind and packing mode.

`tests/golden/rows.json` was written by the per-host row cache this project had before its Apache Beam prepare
pipeline (commit 154caba); `compute` now builds the rows with `data_pipelines.prepare` (work units of one
packing block, so unit boundaries fall everywhere they can) and reads them back from the shards, so the
goldens prove the pipeline builds the rows the old code built. The fixtures are written
deterministically (text drawn from the shipped sample by a SHA-256 counter, not a seeded RNG whose stream may
change between library versions; no wall clock; the shipped vocabulary), so `tests/golden/rows.json` only
changes when the rows do.

    python -m tests.golden_rows           # recompute in a temp folder, print differences (exit 1 if any)
    python -m tests.golden_rows --write   # recompute and (re)write tests/golden/rows.json
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import io
import json
import lzma
import os
import pathlib
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden" / "rows.json"
SAMPLE = REPO / "data_pipelines" / "sample"
VOCAB = REPO / "data_pipelines" / "sample_vocab" / "sentencepiece.bpe.model"
ROOT_MARK = "<root>"  # fixture paths are stored relative to this, so the goldens do not name a temp folder


def fingerprint(ids, offsets, restart) -> dict:
    """Row count, token count and a SHA-256 of the three arrays in a fixed dtype (row i = ids[offsets[i]:...])."""
    h = hashlib.sha256()
    for a, dtype in ((ids, "<i4"), (offsets, "<i8"), (restart, "<i4")):
        h.update(np.asarray(a, dtype).tobytes())
    return {"rows": len(restart), "tokens": int(offsets[-1]), "sha256": h.hexdigest()}


# ----------------------------------------------------------------------------------------------------------------
# Deterministic text from the shipped sample
# ----------------------------------------------------------------------------------------------------------------
class _Draw:
    """Integers from SHA-256 of (seed, counter): the same on every machine and library version."""

    def __init__(self, seed: str):
        self.seed, self.i = seed, 0

    def below(self, n: int) -> int:
        self.i += 1
        return int.from_bytes(hashlib.sha256(f"{self.seed}|{self.i}".encode()).digest()[:8], "little") % n

    def pick(self, items: list):
        return items[self.below(len(items))]


def fingerprint_rows(rows) -> dict:
    """`fingerprint` (and the summed stats) of prepared rows (`data_pipelines.shards.ShardRows`)."""
    records = rows.get(range(len(rows)))
    lengths = [len(ids) for ids, _, _ in records]
    ids = np.concatenate([ids for ids, _, _ in records]) if records else np.zeros(0, np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    restart = np.array([r for _, r, _ in records], np.int32)
    stats = np.sum([st for _, _, st in records], 0).astype(int).tolist() if records else [0, 0, 0, 0]
    return {**fingerprint(ids, offsets, restart), "stats": stats}


def _mono(lang: str) -> list[str]:
    return (SAMPLE / "mono" / f"{lang}.txt").read_text(encoding="utf-8").splitlines()


def _pairs(lang: str) -> list[tuple[str, str]]:
    lines = (SAMPLE / "parallel" / f"en-{lang}.tsv").read_text(encoding="utf-8").splitlines()
    return [tuple(line.split("\t", 1)) for line in lines]


def _line(d: _Draw, pool: list[str]) -> str:
    """One sentence, or (1 in 10) 5-14 joined: longer than a row at seq_length 64, some at 128."""
    k = 5 + d.below(10) if d.below(10) == 0 else 1
    return " ".join(d.pick(pool) for _ in range(k))


def _quirk(d: _Draw, text: str) -> str:
    """1 line in 30 gets an edge the row builder must keep or strip exactly: ASCII/other white space, CR."""
    if d.below(30):
        return text
    return [" \t" + text + "  ", "   ", "", text + "\r", text + "\u00a0", "\u3000" + text][d.below(6)]


def _lines(lang: str, seed: str, quirks: bool = True) -> list[str]:
    d, pool = _Draw(f"{seed}|{lang}"), _mono(lang)
    return [_quirk(d, _line(d, pool)) if quirks else _line(d, pool) for _ in range(700 + d.below(500))]


def _docs(lang: str, seed: str, n: int) -> list[list[str]]:
    """n documents of 1-6 lines (a blank or CR-ended line now and then)."""
    d, pool = _Draw(f"{seed}|{lang}"), _mono(lang)
    return [[_quirk(d, _line(d, pool)) for _ in range(1 + d.below(6))] for _ in range(n)]


# ----------------------------------------------------------------------------------------------------------------
# Writers, one per source kind
# ----------------------------------------------------------------------------------------------------------------
def _open(path: pathlib.Path):
    """Binary writer; .gz without a name or time stamp in its header, so the bytes repeat too."""
    if path.suffix == ".gz":
        return gzip.GzipFile(filename="", mode="wb", fileobj=open(path, "wb"), mtime=0)
    if path.suffix == ".xz":
        return lzma.open(path, "wb")
    return open(path, "wb")


def _write(path: pathlib.Path, lines: list[str], final_newline: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with _open(path) as f:
        f.write(("\n".join(lines) + ("\n" if final_newline else "")).encode("utf-8"))


def _cc100(docs: list[list[str]], seed: str) -> list[str]:
    d, out = _Draw(seed), []
    for doc in docs:
        out += doc + [""] * (2 if d.below(15) == 0 else 1)  # now and then two blank lines between documents
    return out


def _jsonl(docs: list[list[str]]) -> list[str]:
    """One document a line; CRLF inside some, blank inner lines, an empty text and a blank JSON line."""
    out = []
    for i, doc in enumerate(docs):
        sep = "\r\n" if i % 7 == 3 else "\n\n" if i % 11 == 5 else "\n"
        out.append(json.dumps({"id": i, "text": sep.join(doc) if i != 10 else ""}, ensure_ascii=i % 2 == 0))
        if i == 20:
            out.append("  ")
    return out


def _tfrecord(path: pathlib.Path, docs: list[list[str]]) -> None:
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(path)) as w:
        for doc in docs:
            feat = {"text": tf.train.Feature(bytes_list=tf.train.BytesList(value=["\n".join(doc).encode()]))}
            w.write(tf.train.Example(features=tf.train.Features(feature=feat)).SerializeToString())


def _tfds(root: pathlib.Path, name: str, config: str, version: str, extra: tuple, splits: dict) -> None:
    """A TFDS dataset written by TFDS itself (as tests/test_data_sources.py's `tfds_dir` does)."""
    import tensorflow as tf
    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()
    features = tfds.features.FeaturesDict({k: tfds.features.Text() for k in ("text", *extra)})

    def ds(texts: list[str]) -> tf.data.Dataset:
        return tf.data.Dataset.from_tensor_slices({"text": texts, **{k: ["x"] * len(texts) for k in extra}})

    with contextlib.redirect_stdout(io.StringIO()):  # TFDS prints "Downloading and preparing ..."
        tfds.dataset_builders.store_as_tfds_dataset(
            name=name, version=version, config=config, features=features, data_dir=str(root),
            split_datasets={s: ds(texts) for s, texts in splits.items()},
        )  # fmt: skip


def _article(d: _Draw, pool: list[str]) -> str:
    """Wiki-40B's layout: markers on their own lines, paragraphs' lines joined by _NEWLINE_."""
    text = f"\n_START_ARTICLE_\n{d.pick(pool)}\n"
    for s in range(1 + d.below(3)):
        if s:
            text += f"_START_SECTION_\n{d.pick(pool)}\n"
        text += "_START_PARAGRAPH_\n" + "_NEWLINE_".join(_line(d, pool) for _ in range(1 + d.below(4))) + "\n"
    return text


def _tsv(lang: str, seed: str) -> list[str]:
    """`en TAB other` pairs, some long (truncated in a row), and lines the TLM reader counts or drops."""
    d, pool = _Draw(f"{seed}|{lang}"), _pairs(lang)
    out = []
    for i in range(600 + d.below(300)):
        k = 3 + d.below(6) if d.below(12) == 0 else 1
        ps = [d.pick(pool) for _ in range(k)]
        out.append(" ".join(p[0] for p in ps) + "\t" + " ".join(p[1] for p in ps))
        if i % 53 == 7:
            out.append([ps[0][0], "", "\t" + ps[0][1], ps[0][0] + "\t", ps[0][0] + "\tx\ty"][d.below(5)])
        if i % 97 == 11:
            out += [ps[0][1], ps[0][0]]  # two malformed (no TAB) in a row
    return out + [pool[0][0]]  # a malformed last line: its count has no next row to go to


def _pair_jsonl(lang: str, seed: str) -> list[str]:
    d, pool = _Draw(f"{seed}|{lang}"), _pairs(lang)
    out = []
    for i in range(600 + d.below(300)):
        en, other = d.pick(pool)
        if i % 41 == 9:
            en, other = en + "\tand\nmore", other + "\n" + other  # tabs and newlines become spaces
        out.append(json.dumps({"en": en, lang: other, "n": i}, ensure_ascii=False))
        if i % 61 == 30:
            out.append("")
    return out


def build_fixtures(root: str) -> dict[str, dict]:
    """Writes every fixture under `root`; returns case -> `config.data` overrides (paths under `root`)."""
    r = pathlib.Path(root)
    cases: dict[str, dict] = {"sample": dict(source="sample", languages=("en", "de", "ru"))}
    for case, ext, langs in (("text", ".txt", ("en", "fr", "ja")), ("text_gz", ".txt.gz", ("de", "es")),
                             ("text_xz", ".txt.xz", ("ru", "ar"))):  # fmt: skip
        for lang in langs:
            _write(r / case / f"{lang}{ext}", _lines(lang, case), final_newline=case != "text")
        cases[case] = dict(source="text", path=str(r / case))
    cases["text_seq128"] = dict(source="text", path=str(r / "text"), seq_length=128)
    for lang in ("en", "el", "hi"):
        _write(r / "cc100" / f"{lang}.txt", _cc100(_docs(lang, "cc100", 200), f"cc100|{lang}"))
    for packing in ("complete", "complete_doc", "none"):
        cases["cc100" if packing == "complete" else f"cc100_{packing}"] = dict(
            source="cc100", path=str(r / "cc100"), packing=packing
        )
    for case, ext, langs in (("jsonl", ".jsonl", ("fr", "he")), ("jsonl_gz", ".jsonl.gz", ("es", "zh"))):
        for lang in langs:
            _write(r / case / f"{lang}{ext}", _jsonl(_docs(lang, case, 220)))
        cases[case] = dict(source="jsonl", path=str(r / case))
    (r / "tfrecord").mkdir()
    for lang in ("de", "cy"):
        docs = _docs(lang, "tfrecord", 240)
        _tfrecord(r / "tfrecord" / f"{lang}-train.tfrecord", docs[:220])
        _tfrecord(r / "tfrecord" / f"{lang}-validation.tfrecord", docs[220:])
    cases["tfrecord"] = dict(source="tfrecord", path=str(r / "tfrecord"))
    mc4 = {}
    for lang in ("en", "fr"):
        texts = ["\n".join(doc) for doc in _docs(lang, "mc4", 240)]
        mc4.update({lang: texts[:220], f"{lang}-validation": texts[220:]})
    _tfds(r / "tfds", "c4", "multilingual", "3.1.0", ("url", "timestamp"), mc4)
    cases["mc4"] = dict(source="mc4", languages=("en", "fr"), tfds_data_dir=str(r / "tfds"))
    for lang in ("de", "ja"):
        d, pool = _Draw(f"wiki40b|{lang}"), _mono(lang)
        articles = [_article(d, pool) for _ in range(150)]
        splits = {"train": articles[:130], "validation": articles[130:140], "test": articles[140:]}
        _tfds(r / "tfds", "wiki40b", lang, "1.3.0", ("wikidata_id", "version_id"), splits)
    cases["wiki40b"] = dict(source="wiki40b", languages=("de", "ja"), tfds_data_dir=str(r / "tfds"))
    cases["tlm_sample"] = dict(source="sample", languages=("en", "de"), tlm_rate=0.5, parallel_languages=("de", "fr"))
    for lang in ("de", "fr", "ja"):
        _write(r / "parallel_tsv" / f"en-{lang}.tsv", _tsv(lang, "tsv"))
    for lang in ("es", "ru"):
        _write(r / "parallel_jsonl" / f"en-{lang}.jsonl", _pair_jsonl(lang, "pjsonl"))
    for case, folder in (("tlm_tsv", "parallel_tsv"), ("tlm_jsonl", "parallel_jsonl")):
        cases[case] = dict(
            source="text", path=str(r / "text"), languages=("en",), tlm_rate=0.5, parallel_path=str(r / folder)
        )
    for over in cases.values():
        over.setdefault("seq_length", 64)
    return cases


# ----------------------------------------------------------------------------------------------------------------
# Computing and comparing
# ----------------------------------------------------------------------------------------------------------------
def _sha256_files(paths: list[pathlib.Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(f"{p.relative_to(REPO)}\0".encode() + p.read_bytes())
    return h.hexdigest()


def compute(root: str, log: Callable[[str], None] = lambda s: None) -> dict:
    """Fixtures under `root`, then every language entry's train rows, prepared into `root/prepared/<case>`."""
    from data_pipelines import prepare, shards
    from data_pipelines.config import DataConfig, default_data_config

    out: dict = {
        "inputs": {  # what the fixtures are made of: if these differ, so will the rows
            "sample_sha256": _sha256_files(sorted(p for p in SAMPLE.rglob("*") if p.is_file())),
            "vocab_sha256": _sha256_files([VOCAB]),
        },
        "cases": {},
    }
    for case, over in build_fixtures(root).items():
        t0 = time.perf_counter()
        c = default_data_config()
        c.update(over)
        c.decompress_dir = os.path.join(root, "cache", case)
        cfg = DataConfig.from_section(c)
        folder = os.path.join(root, "prepared", case)
        manifest = prepare.prepare(cfg, folder, unit_lines=1)  # one packing block per unit
        entry: dict = {"overrides": json.loads(json.dumps(over).replace(root, ROOT_MARK)), "languages": {}}
        for (lang, split), info in shards.splits_of(manifest).items():
            if split == "train":
                entry["languages"][lang] = fingerprint_rows(shards.ShardRows(folder, info))
        out["cases"][case] = entry
        counts = ", ".join(f"{k} {v['rows']}" for k, v in entry["languages"].items())
        log(f"{case}: {counts} rows ({time.perf_counter() - t0:.1f} s)")
    return out


def diff(old, new, where: str = "") -> list[str]:
    """Human-readable differences between two golden trees (empty when equal)."""
    if isinstance(old, dict) and isinstance(new, dict):
        lines = []
        for k in sorted(set(old) | set(new)):
            at = f"{where}/{k}" if where else str(k)
            if k not in new:
                lines.append(f"{at}: missing now (was {json.dumps(old[k])[:200]})")
            elif k not in old:
                lines.append(f"{at}: new (is {json.dumps(new[k])[:200]})")
            else:
                lines += diff(old[k], new[k], at)
        return lines
    return [] if old == new else [f"{where}: {json.dumps(old)} -> {json.dumps(new)}"]


def load_golden() -> dict:
    return json.loads(GOLDEN.read_text(encoding="utf-8"))


def dumps(goldens: dict) -> str:
    return json.dumps(goldens, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help=f"(re)write {GOLDEN.relative_to(REPO)}")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="xlmp-golden-rows-") as root:
        new = json.loads(dumps(compute(root, log=lambda s: print(s, file=sys.stderr))))  # tuples -> lists
    print(f"computed in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    if args.write:
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(dumps(new), encoding="utf-8")
        print(f"wrote {GOLDEN}")
        return 0
    changes = diff(load_golden(), new)
    print("\n".join(changes) if changes else "rows match the goldens")
    return 1 if changes else 0


if __name__ == "__main__":
    sys.exit(main())
