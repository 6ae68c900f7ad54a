"""SeqIO Tasks (one per language, one per TLM pair) and the temperature-sampled Mixture of a data config.

`register_mixture(cfg)` registers everything a data config describes and returns the mixture's name. Names
carry a fingerprint of the config (`xlmp_<hash>_mlm_<lang>`, `xlmp_<hash>_tlm_en_<lang>`, `xlmp_<hash>`), so
two configs never clash in SeqIO's global registries and registering the same config again is a no-op.
The sources the tasks read are in `data_pipelines.sources`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json

import ml_collections
import seqio
import tensorflow as tf

from data_pipelines import preprocessors as prep
from data_pipelines.config import DataConfig
from data_pipelines.seqio_vocab import SeqioXLMRVocabulary
from data_pipelines.sources import SourceSpec, mono_languages, mono_source, parallel_languages, parallel_source


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
    vocab: SeqioXLMRVocabulary


_SPECS: dict[str, MixtureSpec] = {}


def _fingerprint(cfg: DataConfig) -> str:
    """The config's identity in task names (and so in the row cache): the fields that change the rows/rates."""
    keys = [
        "source", "path", "languages", "text_field", "tfds_data_dir", "mc4_tfds_name", "wiki40b_tfds_name", "alpha",
        "sizes", "seq_length", "packing", "tlm_rate", "parallel_path", "parallel_languages", "shuffle_buffer",
        "vocab_path",
    ]  # fmt: skip
    blob = {k: getattr(cfg, k) for k in keys}
    blob["sizes"] = dict(cfg.sizes)  # serialised as the ConfigDict's dict was: cached rows keep their names
    return hashlib.sha1(json.dumps(blob, sort_keys=True, default=list).encode()).hexdigest()[:12]


def output_features(vocab: SeqioXLMRVocabulary) -> dict[str, seqio.Feature]:
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


def _mono_preprocessors(spec: SourceSpec, cfg: DataConfig, vocab, language: int, text_key: str) -> list:
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
def load_vocab(path: str) -> SeqioXLMRVocabulary:
    """The vocabulary, with its TF SentencePiece op created eagerly (a resource first made while tracing a
    tf.data function would belong to that function's graph and could not be used by the next one)."""
    vocab = SeqioXLMRVocabulary(path)
    with tf.init_scope():
        _ = vocab.tf_tokenizer
    return vocab


def register_mixture(cfg: DataConfig | ml_collections.ConfigDict) -> str:
    """Registers the Tasks and the Mixture of data config `cfg` (idempotent) and returns the mixture's name."""
    return mixture_spec(cfg).name


def mixture_spec(cfg: DataConfig | ml_collections.ConfigDict) -> MixtureSpec:
    """Like `register_mixture`, returning the full `MixtureSpec`."""
    cfg = DataConfig.of(cfg)
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
