"""SeqIO Tasks (one per language, one per TLM pair) and the temperature-sampled Mixture of a data config.

`register_mixture(cfg)` registers everything a data config describes and returns the mixture's name. Names
carry a fingerprint of the config (`xlmp_<hash>_mlm_<lang>`, `xlmp_<hash>_tlm_en_<lang>`, `xlmp_<hash>`), so
two configs never clash in SeqIO's global registries and registering the same config again is a no-op.

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
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import json
import lzma
import os
import tempfile

import ml_collections
import seqio
import tensorflow as tf

from data_pipelines import preprocessors as prep
from data_pipelines.config import validate_data_config
from data_pipelines.vocab import XLMRVocabulary

TEXT_EXTENSIONS = (".txt", ".txt.gz", ".txt.xz")
JSONL_EXTENSIONS = (".jsonl", ".jsonl.gz", ".jsonl.xz")
_READ_CHUNK = 1 << 24


# ----------------------------------------------------------------------------------------------------------------
# Files: counting, decompression, the held-out rule
# ----------------------------------------------------------------------------------------------------------------
def _open_binary(path: str):
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
    with _open_binary(path) as f:
        while chunk := f.read(_READ_CHUNK):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    return n + (last != b"\n")


def _iter_lines(path: str):
    """Lines (bytes, without the newline) of a (possibly compressed) file, streamed."""
    rest = b""
    with _open_binary(path) as f:
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


def _cache_dir(cfg) -> str:
    d = cfg.decompress_dir or os.path.join(tempfile.gettempdir(), "xlmp_data_cache")
    tf.io.gfile.makedirs(d)
    return d


def _materialize(path: str, cfg, *, jsonl_field: str | None = None, pairs: tuple[str, str] | None = None) -> str:
    """A local plain-text copy of `path` for what tf.data cannot read directly (.xz, JSON lines), made once.

    JSON documents become their lines followed by a blank line (the CC-100 layout); JSON pairs become
    `src TAB tgt` lines. Unparsable JSON lines are written as one undecodable line, so they are counted.
    """
    key = hashlib.sha1(f"{path}|{jsonl_field}|{pairs}".encode()).hexdigest()[:16]
    out = os.path.join(_cache_dir(cfg), f"{key}-{os.path.basename(path).split('.')[0]}.txt")
    if tf.io.gfile.exists(out):
        return out
    tmp = f"{out}.tmp{os.getpid()}"
    with tf.io.gfile.GFile(tmp, "wb") as dst:
        if jsonl_field is None and pairs is None:
            with _open_binary(path) as src:
                while chunk := src.read(_READ_CHUNK):
                    dst.write(chunk)
        for raw in _iter_lines(path) if jsonl_field is not None or pairs is not None else ():
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


# ----------------------------------------------------------------------------------------------------------------
# Data sources
# ----------------------------------------------------------------------------------------------------------------
class TextLinesSource(seqio.DataSource):
    """Lines of local/gs:// text files; `validation` = the last ceil(10 %) of each file.

    Shards: whole files when there are at least as many files as shards, else contiguous line ranges of each
    file (not every N-th line: neighbouring sentences stay together for XLM-R's row building). Shards of one
    split are disjoint and cover it exactly.
    """

    def __init__(self, files: list[str], origins: dict[str, str] | None = None):
        self._files = list(files)
        self._origins = dict(origins or {})  # decompressed copy -> the file it came from (named in errors)
        self._counts = {f: count_lines(f) for f in self._files}
        for f, n in self._counts.items():
            if n == 0:
                raise ValueError(f"empty input file: {f!r}")
        sizes = {s: sum(b - a for a, b in (split_range(n, s) for n in self._counts.values())) for s in _SPLITS}
        super().__init__(splits=_SPLITS, num_input_examples=sizes, caching_permitted=False)

    @property
    def supports_arbitrary_sharding(self) -> bool:
        return True

    def list_shards(self, split: str) -> list[str]:
        return self._files

    def train_ranges(self) -> list[tuple[str, str, int, int]]:
        """(file, name to show, first line, end line) of the train split, for the row cache."""
        return [(f, self._origins.get(f, f), *split_range(self._counts[f], "train")) for f in self._files]

    def get_dataset(self, split="train", shuffle=True, seed=None, shard_info=None, **unused) -> tf.data.Dataset:
        del shuffle, seed  # rows are shuffled after they are built; reading stays in order
        files = self._files
        by_file = shard_info is not None and len(files) >= shard_info.num_shards
        if by_file:  # enough files: each host reads whole files (no skipping through others' lines)
            files = files[shard_info.index :: shard_info.num_shards]
        parts = []
        for f in files:
            a, b = split_range(self._counts[f], split)
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
        self._counts = {f: count_lines(f) for files in self._files.values() for f in files}
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


def _write_split_file(cfg, name: str, lines: list[str]) -> str:
    """`lines` as a UTF-8 file in the cache folder, named by its content (written once, never stale)."""
    body = "".join(line + "\n" for line in lines).encode("utf-8")
    out = os.path.join(_cache_dir(cfg), f"sample-{hashlib.sha1(body).hexdigest()[:16]}-{name}.txt")
    if not tf.io.gfile.exists(out):
        tmp = f"{out}.tmp{os.getpid()}"
        with tf.io.gfile.GFile(tmp, "wb") as f:
            f.write(body)
        tf.io.gfile.rename(tmp, out, overwrite=True)
    return out


def sample_mono_source(cfg, lang: str) -> SplitFilesSource:
    """The sample's `lang` with the project's leakage-free splits (`sample.read_mono`)."""
    from data_pipelines import sample

    return SplitFilesSource({s: [_write_split_file(cfg, f"{lang}-{s}", sample.read_mono(lang, s))] for s in _SPLITS})


def sample_parallel_source(cfg, lang: str) -> SplitFilesSource:
    """The sample's en-`lang` pairs (`English TAB other`) with the leakage-free splits (`sample.read_parallel`)."""
    from data_pipelines import sample

    files = {}
    for s in _SPLITS:
        lines = [f"{en}\t{other}" for en, other in sample.read_parallel(lang, s)]
        files[s] = [_write_split_file(cfg, f"en-{lang}-{s}", lines)]
    return SplitFilesSource(files)


_SPLITS = ("train", "validation")


def _glob_one(pattern: str, what: str) -> list[str]:
    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no file for {what}: nothing matches {pattern!r}")
    return files


def _local_files(cfg, lang: str, extensions: tuple[str, ...]) -> list[str]:
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


def _tfds_source(name: str, cfg, splits: dict[str, str], lang: str) -> seqio.TfdsDataSource:
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


def mono_source(cfg, lang: str) -> SourceSpec:
    """The monolingual source of `lang` for `cfg.source`."""
    if cfg.source == "sample":
        from data_pipelines import sample

        if lang not in sample.languages():
            raise ValueError(f"data.languages entry {lang!r} is not in the sample (has: {sample.languages()})")
        src = sample_mono_source(cfg, lang)
        return SourceSpec(src, "lines", src.num_input_examples("train"))
    if cfg.source in ("text", "cc100"):
        originals = _local_files(cfg, lang, TEXT_EXTENSIONS)
        files = [_materialize(f, cfg) if f.endswith(".xz") else f for f in originals]
        src = TextLinesSource(files, dict(zip(files, originals, strict=True)))
        return SourceSpec(src, "lines", src.num_input_examples("train"))
    if cfg.source == "jsonl":
        originals = _local_files(cfg, lang, JSONL_EXTENSIONS)
        files = [_materialize(f, cfg, jsonl_field=cfg.text_field) for f in originals]
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


def parallel_source(cfg, lang: str) -> SourceSpec:
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
    files = tsv or [_materialize(f, cfg, pairs=_pair_keys(f, lang)) for f in jsonl]
    files = [_materialize(f, cfg) if f.endswith(".xz") else f for f in files]
    src = TextLinesSource(files)
    return SourceSpec(src, "pairs", src.num_input_examples("train"))


def _pair_keys(path: str, lang: str) -> tuple[str, str]:
    with _open_binary(path) as f:
        first = json.loads(f.readline())
    for keys in (("en", lang), ("src", "tgt"), ("source", "target")):
        if all(k in first for k in keys):
            return keys
    raise ValueError(f"{path!r}: JSON pairs need keys ('en', {lang!r}) or ('src', 'tgt'); got {sorted(first)}")


def parallel_languages(cfg) -> list[str]:
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


def mono_languages(cfg) -> list[str]:
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


# ----------------------------------------------------------------------------------------------------------------
# Temperature sampling
# ----------------------------------------------------------------------------------------------------------------
def temperature_rates(sizes: dict[str, float], alpha: float) -> dict[str, float]:
    """rate_l = n_l**alpha / sum_k n_k**alpha (XLM-R's / mT5's exponentiated sampling; alpha=1: proportional)."""
    weights = {lang: float(n) ** alpha for lang, n in sizes.items()}
    total = sum(weights.values())
    return {lang: w / total for lang, w in weights.items()}


# ----------------------------------------------------------------------------------------------------------------
# Registration
# ----------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class MixtureSpec:
    """What `register_mixture` registered: names, language ids, sizes and rates."""

    name: str
    languages: tuple[str, ...]  # language id i = languages[i]; TLM pairs are named 'en-<lang>'
    task_names: tuple[str, ...]  # same order as languages
    sizes: dict  # n_l per language entry
    rates: dict  # mixing rate per language entry (sums to 1)
    vocab: XLMRVocabulary


_SPECS: dict[str, MixtureSpec] = {}


def _fingerprint(cfg) -> str:
    keys = [
        "source", "path", "languages", "text_field", "tfds_data_dir", "mc4_tfds_name", "wiki40b_tfds_name", "alpha",
        "sizes", "seq_length", "packing", "tlm_rate", "parallel_path", "parallel_languages", "shuffle_buffer",
        "vocab_path",
    ]  # fmt: skip
    blob = {k: (cfg[k].to_dict() if isinstance(cfg[k], ml_collections.ConfigDict) else cfg[k]) for k in keys}
    return hashlib.sha1(json.dumps(blob, sort_keys=True, default=list).encode()).hexdigest()[:12]


def output_features(vocab: XLMRVocabulary) -> dict[str, seqio.Feature]:
    """The features every task yields (before masking); `stat_*` are counters summed by the input pipeline."""
    feats = {
        "input_ids": seqio.Feature(vocab, add_eos=False, dtype=tf.int32, rank=1),
        "positions": seqio.Feature(vocab, add_eos=False, dtype=tf.int32, rank=1),
        "language": seqio.Feature(vocab, add_eos=False, dtype=tf.int32, rank=0),
    }
    feats.update({k: seqio.Feature(vocab, add_eos=False, dtype=tf.int32, rank=0) for k in prep.STAT_KEYS})
    return feats


def _tsv_to_pairs(ds: tf.data.Dataset) -> tf.data.Dataset:
    def fn(ex):
        parts = tf.strings.split(ex["text"], "\t", maxsplit=1)
        ok = tf.size(parts) == 2
        parts = tf.concat([parts, ["", ""]], 0)
        return {"src": parts[0], "tgt": parts[1], "malformed": tf.cast(tf.logical_not(ok), tf.int32)}

    return ds.map(fn, num_parallel_calls=prep.AUTOTUNE)


def _mono_preprocessors(spec: SourceSpec, cfg, vocab, language: int, text_key: str) -> list:
    steps = []
    if spec.kind == "documents":
        steps.append(functools.partial(prep.documents_to_lines, text_key=text_key, wiki40b=spec.wiki40b))
    steps += [
        functools.partial(
            prep.lines_to_rows, vocab=vocab, seq_length=cfg.seq_length, mode=cfg.packing, language=language
        ),
        functools.partial(prep.rows_to_features, seq_length=cfg.seq_length, bos_id=vocab.bos_id, pad_id=vocab.pad_id),
    ]
    return [_no_kwargs(f) for f in steps]


def _no_kwargs(fn):
    """SeqIO passes `sequence_length`/`output_features` to preprocessors that take them; ours take only `ds`."""

    def wrapped(ds):
        return fn(ds)

    return wrapped


@functools.lru_cache(maxsize=16)
def load_vocab(path: str) -> XLMRVocabulary:
    """The vocabulary, with its TF SentencePiece op created eagerly (a resource first made while tracing a
    tf.data function would belong to that function's graph and could not be used by the next one)."""
    vocab = XLMRVocabulary(path)
    with tf.init_scope():
        _ = vocab.tf_tokenizer
    return vocab


def register_mixture(cfg) -> str:
    """Registers the Tasks and the Mixture of data config `cfg` (idempotent) and returns the mixture's name."""
    return mixture_spec(cfg).name


def mixture_spec(cfg) -> MixtureSpec:
    """Like `register_mixture`, returning the full `MixtureSpec`."""
    validate_data_config(cfg)
    name = f"xlmp_{_fingerprint(cfg)}"
    if name in _SPECS and name in seqio.MixtureRegistry.names():
        return _SPECS[name]
    vocab = load_vocab(cfg.vocab_path)
    mono = mono_languages(cfg)
    pairs = parallel_languages(cfg)
    if not mono:
        raise ValueError(
            f"data.languages={tuple(cfg.languages)!r} gives an empty mixture for data.source={cfg.source!r}"
            f" (data.path={cfg.path!r})"
        )
    overrides = dict(cfg.sizes)
    languages, task_names, sizes = [], [], {}
    feats = output_features(vocab)
    for lang in mono:
        spec = mono_source(cfg, lang)
        lid = len(languages)
        tname = f"{name}_mlm_{lang}"
        if tname not in seqio.TaskRegistry.names():
            seqio.TaskRegistry.add(
                tname,
                source=spec.source,
                output_features=feats,
                preprocessors=_mono_preprocessors(spec, cfg, vocab, lid, cfg.text_field),
                shuffle_buffer_size=cfg.shuffle_buffer or None,
            )
        languages.append(lang)
        task_names.append(tname)
        sizes[lang] = float(overrides.get(lang, spec.size))
    for lang in pairs:
        spec = parallel_source(cfg, lang)
        key = f"en-{lang}"
        lid = len(languages)
        tname = f"{name}_tlm_en_{lang}"
        if tname not in seqio.TaskRegistry.names():
            steps = [
                _tsv_to_pairs,
                functools.partial(prep.tlm_pairs, vocab=vocab, seq_length=cfg.seq_length, language=lid),
            ]
            seqio.TaskRegistry.add(
                tname,
                source=spec.source,
                output_features=feats,
                preprocessors=[_no_kwargs(f) for f in steps],
                shuffle_buffer_size=cfg.shuffle_buffer or None,
            )
        languages.append(key)
        task_names.append(tname)
        sizes[key] = float(overrides.get(key, spec.size))
    for lang, n in sizes.items():
        if n <= 0:
            raise ValueError(f"data.languages entry {lang!r} has no training examples")
    mono_rates = temperature_rates({k: sizes[k] for k in mono}, cfg.alpha)
    rates = {k: (1.0 - cfg.tlm_rate) * r for k, r in mono_rates.items()}
    if pairs:
        pair_rates = temperature_rates({f"en-{p}": sizes[f"en-{p}"] for p in pairs}, cfg.alpha)
        rates.update({k: cfg.tlm_rate * r for k, r in pair_rates.items()})
    if name not in seqio.MixtureRegistry.names():
        seqio.MixtureRegistry.add(name, [(t, rates[lang]) for t, lang in zip(task_names, languages, strict=True)])
    spec = MixtureSpec(name, tuple(languages), tuple(task_names), sizes, rates, vocab)
    _SPECS[name] = spec
    return spec


def unregister(name: str) -> None:
    """Removes a mixture registered by `register_mixture` and its tasks (for tests and notebooks)."""
    spec = _SPECS.pop(name, None)
    if name in seqio.MixtureRegistry.names():
        seqio.MixtureRegistry.remove(name)
    for t in spec.task_names if spec else ():
        if t in seqio.TaskRegistry.names():
            seqio.TaskRegistry.remove(t)
