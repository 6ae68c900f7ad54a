"""Where each language's text comes from: one SeqIO `DataSource` per language (MLM) and per en-<lang> pair (TLM).

Sources (`data.source`):
  sample    the shipped corpus (`data_pipelines/sample/mono/<lang>.txt`)
  text      plain text, one document or sentence a line        (<lang>.txt, .txt.gz, .txt.xz)
  cc100     CC-100 layout: one paragraph a line, blank line between documents (same files)
  jsonl     one JSON object a line, the text under `data.text_field` (<lang>.jsonl[.gz|.xz])
  tfrecord  tf.Example records with a bytes feature `data.text_field` (<lang>-train.tfrecord*, <lang>-validation...)
  mc4       TFDS `c4/multilingual` (train split '<lang>', validation '<lang>-validation')
  wiki40b   TFDS `wiki40b/<lang>`
Local paths (`data.path`: a folder, or a pattern with `{lang}`) go through `tf.io.gfile`, so gs:// works.
For local text the held-out rule of the sample applies: the last 10 % of each file's lines is `validation`.
`mono_source` / `parallel_source` return a `SourceSpec`; `mono_languages` / `parallel_languages` say which
languages a config mixes. The Tasks and the Mixture built on them are in `data_pipelines.tasks`.
"""

from __future__ import annotations

import dataclasses
import json
import os

import seqio
import tensorflow as tf

from data_pipelines import readers
from data_pipelines.config import JSONL_EXTENSIONS, TEXT_EXTENSIONS, DataConfig

_SPLITS = ("train", "validation")


class TextLinesSource(seqio.DataSource):
    """Lines of local/gs:// text files; `validation` = the last ceil(10 %) of each file.

    Shards: whole files when there are at least as many files as shards, else contiguous line ranges of each
    file (not every N-th line: neighbouring sentences stay together for XLM-R's row building). Shards of one
    split are disjoint and cover it exactly.
    """

    def __init__(self, files: list[str], origins: dict[str, str] | None = None):
        self._files = list(files)
        self._origins = dict(origins or {})  # decompressed copy -> the file it came from (named in errors)
        self._counts = {f: readers.count_lines(f) for f in self._files}
        for f, n in self._counts.items():
            if n == 0:
                raise ValueError(f"empty input file: {f!r}")
        sizes = {s: sum(b - a for a, b in (readers.split_range(n, s) for n in self._counts.values())) for s in _SPLITS}
        super().__init__(splits=_SPLITS, num_input_examples=sizes, caching_permitted=False)

    @property
    def supports_arbitrary_sharding(self) -> bool:
        return True

    def list_shards(self, split: str) -> list[str]:
        return self._files

    def train_ranges(self) -> list[tuple[str, str, int, int]]:
        """(file, name to show, first line, end line) of the train split, for the row cache."""
        return [(f, self._origins.get(f, f), *readers.split_range(self._counts[f], "train")) for f in self._files]

    def get_dataset(self, split="train", shuffle=True, seed=None, shard_info=None, **unused) -> tf.data.Dataset:
        del shuffle, seed  # rows are shuffled after they are built; reading stays in order
        files = self._files
        by_file = shard_info is not None and len(files) >= shard_info.num_shards
        if by_file:  # enough files: each host reads whole files (no skipping through others' lines)
            files = files[shard_info.index :: shard_info.num_shards]
        parts = []
        for f in files:
            a, b = readers.split_range(self._counts[f], split)
            if shard_info is not None and not by_file:
                m, i, k = b - a, shard_info.index, shard_info.num_shards
                a, b = a + i * m // k, a + (i + 1) * m // k
            comp = "GZIP" if f.endswith(".gz") else ""
            parts.append(tf.data.TextLineDataset(f, compression_type=comp).skip(a).take(b - a))
        ds = parts[0]
        for p in parts[1:]:
            ds = ds.concatenate(p)
        return ds.map(lambda line: {"text": line})


class SplitFilesSource(seqio.DataSource):
    """Lines of prepared files, one list of files per split (each file wholly in its split).

    Used for the shipped sample, whose leakage-free splits are computed in Python (`data_pipelines.sample`)
    and written once to the cache folder. Shards: contiguous line ranges of each file, as `TextLinesSource`.
    """

    def __init__(self, files_by_split: dict[str, list[str]]):
        self._files = {s: list(files_by_split[s]) for s in _SPLITS}
        self._counts = {f: readers.count_lines(f) for files in self._files.values() for f in files}
        sizes = {s: sum(self._counts[f] for f in files) for s, files in self._files.items()}
        super().__init__(splits=_SPLITS, num_input_examples=sizes, caching_permitted=False)

    @property
    def supports_arbitrary_sharding(self) -> bool:
        return True

    def list_shards(self, split: str) -> list[str]:
        return self._files[split]

    def train_ranges(self) -> list[tuple[str, str, int, int]]:
        """(file, name to show, first line, end line) of the train split, for the row cache."""
        return [(f, f, 0, self._counts[f]) for f in self._files["train"]]

    def get_dataset(self, split="train", shuffle=True, seed=None, shard_info=None, **unused) -> tf.data.Dataset:
        del shuffle, seed  # rows are shuffled after they are built; reading stays in order
        parts = []
        for f in self._files[split]:
            a, b = 0, self._counts[f]
            if shard_info is not None:
                m, i, k = b, shard_info.index, shard_info.num_shards
                a, b = i * m // k, (i + 1) * m // k
            parts.append(tf.data.TextLineDataset(f).skip(a).take(b - a))
        ds = parts[0]
        for p in parts[1:]:
            ds = ds.concatenate(p)
        return ds.map(lambda line: {"text": line})


def sample_mono_source(cfg: DataConfig, lang: str) -> SplitFilesSource:
    """The sample's `lang` with the project's leakage-free splits (`sample.read_mono`)."""
    from data_pipelines import sample

    return SplitFilesSource(
        {s: [readers.write_split_file(cfg, f"{lang}-{s}", sample.read_mono(lang, s))] for s in _SPLITS}
    )


def sample_parallel_source(cfg: DataConfig, lang: str) -> SplitFilesSource:
    """The sample's en-`lang` pairs (`English TAB other`) with the leakage-free splits (`sample.read_parallel`)."""
    from data_pipelines import sample

    files = {}
    for s in _SPLITS:
        lines = [f"{en}\t{other}" for en, other in sample.read_parallel(lang, s)]
        files[s] = [readers.write_split_file(cfg, f"en-{lang}-{s}", lines)]
    return SplitFilesSource(files)


_SPLITS = ("train", "validation")


def _glob_one(pattern: str, what: str) -> list[str]:
    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no file for {what}: nothing matches {pattern!r}")
    return files


def _local_files(cfg: DataConfig, lang: str, extensions: tuple[str, ...]) -> list[str]:
    """Files of `lang` under `data.path` (a folder or a `{lang}` pattern)."""
    if "{lang}" in cfg.path:
        pattern = cfg.path.replace("{lang}", lang)
        return _glob_one(pattern, f"data.languages entry {lang!r} (data.path={cfg.path!r})")
    if not tf.io.gfile.isdir(cfg.path):
        raise FileNotFoundError(f"data.path={cfg.path!r} does not exist (or is not a folder)")
    for ext in extensions:
        files = sorted(tf.io.gfile.glob(os.path.join(cfg.path, f"{lang}{ext}")))
        if files:
            return files
    raise FileNotFoundError(
        f"data.languages entry {lang!r}: no {'/'.join(lang + e for e in extensions)} in data.path={cfg.path!r}"
    )


@dataclasses.dataclass
class SourceSpec:
    """A data source and how its elements become the line stream."""

    source: seqio.DataSource
    kind: str  # "lines" | "documents" | "pairs"
    size: float  # n_l for temperature sampling (train examples)
    wiki40b: bool = False


def _tfds_source(name: str, cfg: DataConfig, splits: dict[str, str], lang: str) -> seqio.TfdsDataSource:
    src = seqio.TfdsDataSource(name, tfds_data_dir=cfg.tfds_data_dir or None, splits=splits, read_only=True)
    try:
        available = set(src.tfds_dataset.info.splits.keys())
    except Exception as e:  # TFDS raises several types for a missing dataset/config
        raise ValueError(
            f"data.languages entry {lang!r}: TFDS dataset {name!r} not found in "
            f"data.tfds_data_dir={cfg.tfds_data_dir!r} ({type(e).__name__}: {e})"
        ) from e
    if splits["train"] not in available:
        raise ValueError(
            f"data.languages entry {lang!r}: TFDS {name!r} has no split {splits['train']!r} "
            f"(has: {sorted(available)[:20]}...)"
        )
    return src


def mono_source(cfg: DataConfig, lang: str) -> SourceSpec:
    """The monolingual source of `lang` for `cfg.source`."""
    if cfg.source == "sample":
        from data_pipelines import sample

        if lang not in sample.languages():
            raise ValueError(f"data.languages entry {lang!r} is not in the sample (has: {sample.languages()})")
        src = sample_mono_source(cfg, lang)
        return SourceSpec(src, "lines", src.num_input_examples("train"))
    if cfg.source in ("text", "cc100"):
        originals = _local_files(cfg, lang, TEXT_EXTENSIONS)
        files = [readers.materialize(f, cfg) if f.endswith(".xz") else f for f in originals]
        src = TextLinesSource(files, dict(zip(files, originals, strict=True)))
        return SourceSpec(src, "lines", src.num_input_examples("train"))
    if cfg.source == "jsonl":
        originals = _local_files(cfg, lang, JSONL_EXTENSIONS)
        files = [readers.materialize(f, cfg, jsonl_field=cfg.text_field) for f in originals]
        src = TextLinesSource(files, {f: f"{o} (as text lines in {f})" for f, o in zip(files, originals, strict=True)})
        return SourceSpec(src, "lines", src.num_input_examples("train"))
    if cfg.source == "tfrecord":
        if "{lang}" in cfg.path:
            pat = {s: cfg.path.replace("{lang}", lang).replace("{split}", s) for s in _SPLITS}
        else:
            if not tf.io.gfile.isdir(cfg.path):
                raise FileNotFoundError(f"data.path={cfg.path!r} does not exist (or is not a folder)")
            pat = {s: os.path.join(cfg.path, f"{lang}-{s}.tfrecord*") for s in _SPLITS}
        files = _glob_one(pat["train"], f"data.languages entry {lang!r} (data.path={cfg.path!r})")
        n = sum(int(tf.data.TFRecordDataset(f).reduce(0, lambda c, _: c + 1)) for f in files)
        if n == 0:
            raise ValueError(f"empty input file(s) for {lang!r}: {files}")
        src = seqio.TFExampleDataSource(
            pat, feature_description={cfg.text_field: tf.io.FixedLenFeature([], tf.string)}, caching_permitted=False
        )
        return SourceSpec(src, "documents", n)
    if cfg.source == "mc4":
        src = _tfds_source(cfg.mc4_tfds_name, cfg, {"train": lang, "validation": f"{lang}-validation"}, lang)
        return SourceSpec(src, "documents", src.num_input_examples("train"))
    if cfg.source == "wiki40b":
        name = cfg.wiki40b_tfds_name.replace("{lang}", lang)
        src = _tfds_source(name, cfg, {"train": "train", "validation": "validation"}, lang)
        return SourceSpec(src, "documents", src.num_input_examples("train"), wiki40b=True)
    raise ValueError(f"data.source={cfg.source!r} is not a known source")


def parallel_source(cfg: DataConfig, lang: str) -> SourceSpec:
    """The en-`lang` sentence pairs (TSV `en TAB lang`, or JSON lines with keys en/<lang> or src/tgt)."""
    if not cfg.parallel_path:
        from data_pipelines import sample

        if lang not in sample.parallel_languages():
            raise ValueError(
                f"data.parallel_languages entry {lang!r} has no sample pairs (has: {sample.parallel_languages()})"
            )
        src = sample_parallel_source(cfg, lang)
        return SourceSpec(src, "pairs", src.num_input_examples("train"))
    if not tf.io.gfile.isdir(cfg.parallel_path):
        raise FileNotFoundError(f"data.parallel_path={cfg.parallel_path!r} does not exist (or is not a folder)")
    tsv = sorted(tf.io.gfile.glob(os.path.join(cfg.parallel_path, f"en-{lang}.tsv*")))
    jsonl = sorted(tf.io.gfile.glob(os.path.join(cfg.parallel_path, f"en-{lang}.jsonl*")))
    if not tsv and not jsonl:
        raise FileNotFoundError(
            f"data.parallel_languages entry {lang!r}: no en-{lang}.tsv or en-{lang}.jsonl in "
            f"data.parallel_path={cfg.parallel_path!r}"
        )
    files = tsv or [readers.materialize(f, cfg, pairs=_pair_keys(f, lang)) for f in jsonl]
    files = [readers.materialize(f, cfg) if f.endswith(".xz") else f for f in files]
    src = TextLinesSource(files)
    return SourceSpec(src, "pairs", src.num_input_examples("train"))


def _pair_keys(path: str, lang: str) -> tuple[str, str]:
    with readers.open_binary(path) as f:
        first = json.loads(f.readline())
    for keys in (("en", lang), ("src", "tgt"), ("source", "target")):
        if all(k in first for k in keys):
            return keys
    raise ValueError(f"{path!r}: JSON pairs need keys ('en', {lang!r}) or ('src', 'tgt'); got {sorted(first)}")


def parallel_languages(cfg: DataConfig) -> list[str]:
    """The TLM pairs of `cfg` (none when `tlm_rate` is 0)."""
    if cfg.tlm_rate <= 0:
        return []
    if cfg.parallel_languages:
        return list(cfg.parallel_languages)
    if not cfg.parallel_path:
        from data_pipelines import sample

        return list(sample.parallel_languages())
    names = [os.path.basename(p) for p in tf.io.gfile.glob(os.path.join(cfg.parallel_path, "en-*"))]
    return sorted({n[3:].split(".")[0] for n in names})


def mono_languages(cfg: DataConfig) -> list[str]:
    """`data.languages`, or every language the source has when it is empty."""
    if cfg.languages:
        return list(cfg.languages)
    if cfg.source == "sample":
        from data_pipelines import sample

        return list(sample.languages())
    if cfg.source in ("text", "cc100", "jsonl", "tfrecord") and "{lang}" not in cfg.path:
        if not tf.io.gfile.isdir(cfg.path):
            raise FileNotFoundError(f"data.path={cfg.path!r} does not exist (or is not a folder)")
        names = tf.io.gfile.listdir(cfg.path)
        if cfg.source == "tfrecord":
            langs = {n.split("-train.tfrecord")[0] for n in names if "-train.tfrecord" in n}
        else:
            exts = JSONL_EXTENSIONS if cfg.source == "jsonl" else TEXT_EXTENSIONS
            langs = {n[: -len(e)] for n in names for e in exts if n.endswith(e)}
        return sorted(langs)
    return []
