"""The data block of a run config (`config.data`): sources, languages, sampling, sequence building, masking.

`default_data_config()` is the block's schema (every field, its default and its meaning); `DataConfig` is the
same block checked once and typed (`DataConfig.from_section(config.data)`), which is all the rest of
`data_pipelines` reads. A bad value fails before TensorFlow starts, with the offending field named.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

import ml_collections

from data_pipelines import sources

# The shipped vocabulary (same path as `data_pipelines.vocab.SAMPLE_VOCAB_PATH`; spelled out here so that
# building a config does not import TensorFlow).
_SAMPLE_VOCAB_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sample_vocab", "sentencepiece.bpe.model")

SOURCES = sources.names()  # the registered kinds (`data_pipelines.sources`); checks read the registry itself
PACKING_MODES = ("complete", "complete_doc", "none")
ADDED_FIELDS = ("prepared_dir",)  # fields newer than some saved configs: a config without them takes the default


def default_data_config() -> ml_collections.ConfigDict:
    """Defaults: MLM on the shipped sample, every sample language, XLM-R's alpha and masking recipe."""
    c = ml_collections.ConfigDict()
    # --- where the text comes from ---
    c.source = "sample"  # one of SOURCES: the kinds registered in data_pipelines.sources (its MODULES)
    c.path = ""  # local sources: a folder of <lang>.<ext> files, or a pattern with {lang}; gs:// works
    c.languages = ()  # languages to mix; () = every language the source has (sample) -- required for mc4/wiki40b
    c.text_field = "text"  # jsonl: the key holding the text; tfrecord: the tf.Example bytes feature
    c.tfds_data_dir = ""  # TFDS data_dir for mc4/wiki40b ('' = TFDS's default, e.g. ~/tensorflow_datasets or gs://)
    c.mc4_tfds_name = "c4/multilingual:3.1.0"  # TFDS name of mC4; train split '<lang>', validation '<lang>-validation'
    c.wiki40b_tfds_name = "wiki40b/{lang}:1.3.0"  # TFDS name of Wiki-40B, one config per language
    # prepared shards (`python -m data_pipelines.prepare --out=...`, local or gs://); '' = a cache folder under
    # decompress_dir keyed by the inputs; an empty folder is prepared by the run itself (process 0)
    c.prepared_dir = ""
    c.decompress_dir = ""  # local folder: the run's own prepared data (see prepared_dir), copies of gs:// shards;
    # '' = a temp folder
    # --- mixing languages ---
    c.alpha = 0.3  # temperature sampling: rate_l proportional to n_l**alpha (XLM-R / mT5 use 0.3)
    c.sizes = ml_collections.ConfigDict()  # n_l overrides, e.g. sizes.en = 1e9; unset = counted from the source
    # --- sequences ---
    c.seq_length = 128  # tokens per row, <s> and </s> included (the run configs set 512 for base/large)
    c.packing = "complete"  # complete: XLM-R's full sentences up to seq_length; complete_doc: not across docs; none
    # --- MLM (BERT / XLM-R recipe) ---
    c.mlm_rate = 0.15  # fraction of non-special tokens selected for the loss (round(n * rate), at least 1)
    c.mask_prob = 0.8  # of the selected: replaced by <mask>
    c.random_prob = 0.1  # of the selected: replaced by a uniformly random non-special token (the rest kept)
    c.whole_word_masking = False  # select whole words (a word starts at a piece beginning with U+2581)
    # --- TLM (Conneau & Lample 2019) ---
    c.tlm_rate = 0.0  # share of TLM rows in the mixture (0 = MLM only, as XLM-R). Our choice
    c.parallel_path = ""  # folder of en-<lang>.tsv / .jsonl pairs ('' = the sample's parallel/ folder)
    c.parallel_languages = ()  # the <lang> of en-<lang> pairs; () = every pair found
    # --- tf.data ---
    # training order: 0 = each language's rows in file order; > 0 = a fresh full permutation of them every epoch
    # (index-based, so the size no longer matters; kept as a switch for old configs)
    c.shuffle_buffer = 10_000
    c.vocab_path = _SAMPLE_VOCAB_PATH  # SentencePiece model (XLM-R id layout); XLM-R's own file works as is
    return c


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """The checked, typed `config.data`: one field per field of `default_data_config()` (its meaning is there).

    No defaults here: `default_data_config()` is the schema. Build it once with `from_section` (the trainer
    does); the public entry points also accept the `ConfigDict` through `of`. `sizes` is a tuple of
    (language, n) pairs, sorted (`dict(cfg.sizes)` for look-ups), so the config stays hashable.
    """

    source: str
    path: str
    languages: tuple[str, ...]
    text_field: str
    tfds_data_dir: str
    mc4_tfds_name: str
    wiki40b_tfds_name: str
    prepared_dir: str
    decompress_dir: str
    alpha: float
    sizes: tuple[tuple[str, float], ...]
    seq_length: int
    packing: str
    mlm_rate: float
    mask_prob: float
    random_prob: float
    whole_word_masking: bool
    tlm_rate: float
    parallel_path: str
    parallel_languages: tuple[str, ...]
    shuffle_buffer: int
    vocab_path: str

    @classmethod
    def from_section(cls, section: Mapping | ml_collections.ConfigDict) -> DataConfig:
        """Checks a `config.data` block (or a plain dict) and returns it typed.

        Raises ValueError naming `data.<field>` and its value for the first bad field, or the first missing or
        unknown field.
        """
        names = [f.name for f in dataclasses.fields(cls)]
        given = list(section.keys())
        later = {k: default_data_config()[k] for k in ADDED_FIELDS if k not in given}  # configs saved before them
        if later:
            section, given = {**{k: section[k] for k in given}, **later}, given + list(later)
        for name in names:
            if name not in given:
                raise ValueError(f"data.{name} is missing from the data config")
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise ValueError(f"data.{unknown[0]} is not a data field (the fields: {', '.join(sorted(names))})")
        values = {name: section[name] for name in names}
        _check(values)
        values["languages"] = tuple(values["languages"])
        values["parallel_languages"] = tuple(values["parallel_languages"])
        values["sizes"] = tuple(sorted(dict(values["sizes"]).items()))
        return cls(**values)

    @classmethod
    def of(cls, config: DataConfig | Mapping | ml_collections.ConfigDict) -> DataConfig:
        """`config` itself if it is already a DataConfig, else `from_section(config)`."""
        return config if isinstance(config, cls) else cls.from_section(config)


def _fail(field: str, value, why: str) -> None:
    raise ValueError(f"data.{field}={value!r}: {why}")


def _check(v: dict) -> None:
    """The field checks of `DataConfig.from_section`, on the raw values (first bad field wins)."""
    if v["source"] not in sources.REGISTRY:
        _fail("source", v["source"], f"unknown source; expected one of {sources.names()}")
    problem = sources.get(v["source"]).check_config(v)
    if problem:
        field, why = problem
        _fail(field, v[field], why)
    for f in ("languages", "parallel_languages"):
        if isinstance(v[f], str):
            _fail(f, v[f], "expected a list of language codes, not a string")
        if len(set(v[f])) != len(tuple(v[f])):
            _fail(f, v[f], "languages repeat")
    if not (isinstance(v["alpha"], int | float) and 0.0 <= v["alpha"] <= 1.0):
        _fail("alpha", v["alpha"], "expected a number in [0, 1]")
    if not (isinstance(v["seq_length"], int) and v["seq_length"] >= 8):
        _fail("seq_length", v["seq_length"], "expected an int >= 8")
    if "://" in str(v["decompress_dir"]):
        _fail(
            "decompress_dir", v["decompress_dir"], "prepared shards are read from local files: expected a local folder"
        )
    if v["packing"] not in PACKING_MODES:
        _fail("packing", v["packing"], f"expected one of {PACKING_MODES}")
    if not (0.0 < v["mlm_rate"] < 1.0):
        _fail("mlm_rate", v["mlm_rate"], "expected 0 < mlm_rate < 1")
    for f in ("mask_prob", "random_prob"):
        if not (0.0 <= v[f] <= 1.0):
            _fail(f, v[f], "expected a probability in [0, 1]")
    if v["mask_prob"] + v["random_prob"] > 1.0 + 1e-9:
        _fail("random_prob", v["random_prob"], f"mask_prob + random_prob = {v['mask_prob'] + v['random_prob']} > 1")
    if not (0.0 <= v["tlm_rate"] < 1.0):
        _fail("tlm_rate", v["tlm_rate"], "expected 0 <= tlm_rate < 1 (MLM rows must remain)")
    if not (isinstance(v["shuffle_buffer"], int) and v["shuffle_buffer"] >= 0):
        _fail("shuffle_buffer", v["shuffle_buffer"], "expected an int >= 0 (0 = no shuffling)")
    if not v["vocab_path"]:
        _fail("vocab_path", v["vocab_path"], "a SentencePiece model path is required")
    for lang, n in dict(v["sizes"]).items():
        if not (isinstance(n, int | float) and n > 0):
            _fail(f"sizes.{lang}", n, "expected a positive number of examples")


def validate_data_config(cfg: DataConfig | Mapping | ml_collections.ConfigDict) -> DataConfig:
    """`DataConfig.of(cfg)`: raises ValueError naming `data.<field>` and its value for the first bad field."""
    return DataConfig.of(cfg)
