"""The data block of a run config (`config.data`): sources, languages, sampling, sequence building, masking.

Every field is read by `data_pipelines.input_pipeline` (through `data_pipelines.tasks`); `validate_data_config`
checks them all up front so a bad value fails before TensorFlow starts, with the offending field named.
"""

from __future__ import annotations

import math
import os

import ml_collections

# The shipped vocabulary (same path as `data_pipelines.vocab.SAMPLE_VOCAB_PATH`; spelled out here so that
# building a config does not import TensorFlow).
_SAMPLE_VOCAB_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sample_vocab", "sentencepiece.bpe.model")

SOURCES = ("sample", "text", "cc100", "jsonl", "tfrecord", "mc4", "wiki40b")
PACKING_MODES = ("complete", "complete_doc", "none")


def default_data_config() -> ml_collections.ConfigDict:
    """Defaults: MLM on the shipped sample, every sample language, XLM-R's alpha and masking recipe."""
    c = ml_collections.ConfigDict()
    # --- where the text comes from ---
    c.source = "sample"  # one of SOURCES: sample | text | cc100 | jsonl | tfrecord | mc4 | wiki40b
    c.path = ""  # local sources: a folder of <lang>.<ext> files, or a pattern with {lang}; gs:// works
    c.languages = ()  # languages to mix; () = every language the source has (sample) -- required for mc4/wiki40b
    c.text_field = "text"  # jsonl: the key holding the text; tfrecord: the tf.Example bytes feature
    c.tfds_data_dir = ""  # TFDS data_dir for mc4/wiki40b ('' = TFDS's default, e.g. ~/tensorflow_datasets or gs://)
    c.mc4_tfds_name = "c4/multilingual:3.1.0"  # TFDS name of mC4; train split '<lang>', validation '<lang>-validation'
    c.wiki40b_tfds_name = "wiki40b/{lang}:1.3.0"  # TFDS name of Wiki-40B, one config per language
    c.decompress_dir = ""  # local folder: .xz/JSONL copies and the training token cache; '' = a temp folder
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


def max_predictions(seq_length: int, mlm_rate: float) -> int:
    """Upper bound on MLM-selected positions per row: ceil(seq_length * mlm_rate) + 1 (data_pipelines/README.md)."""
    return int(math.ceil(seq_length * mlm_rate)) + 1


def _fail(field: str, value, why: str) -> None:
    raise ValueError(f"data.{field}={value!r}: {why}")


def validate_data_config(cfg: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming `data.<field>` and its value for the first bad field."""
    required = list(default_data_config().keys())
    for f in required:
        if f not in cfg:
            raise ValueError(f"data.{f} is missing from the data config")
    if cfg.source not in SOURCES:
        _fail("source", cfg.source, f"unknown source; expected one of {SOURCES}")
    if cfg.source in ("text", "cc100", "jsonl", "tfrecord") and not cfg.path:
        _fail("path", cfg.path, f"source {cfg.source!r} needs a folder or a {{lang}} file pattern")
    if cfg.source in ("mc4", "wiki40b") and not cfg.languages:
        _fail("languages", cfg.languages, f"source {cfg.source!r} needs an explicit list of languages")
    if isinstance(cfg.languages, str):
        _fail("languages", cfg.languages, "expected a list of language codes, not a string")
    if len(set(cfg.languages)) != len(tuple(cfg.languages)):
        _fail("languages", cfg.languages, "languages repeat")
    if not (isinstance(cfg.alpha, int | float) and 0.0 <= cfg.alpha <= 1.0):
        _fail("alpha", cfg.alpha, "expected a number in [0, 1]")
    if not (isinstance(cfg.seq_length, int) and cfg.seq_length >= 8):
        _fail("seq_length", cfg.seq_length, "expected an int >= 8")
    if "://" in str(cfg.decompress_dir):
        _fail("decompress_dir", cfg.decompress_dir, "the token cache is memory-mapped: expected a local folder")
    if cfg.packing not in PACKING_MODES:
        _fail("packing", cfg.packing, f"expected one of {PACKING_MODES}")
    if not (0.0 < cfg.mlm_rate < 1.0):
        _fail("mlm_rate", cfg.mlm_rate, "expected 0 < mlm_rate < 1")
    for f in ("mask_prob", "random_prob"):
        if not (0.0 <= cfg[f] <= 1.0):
            _fail(f, cfg[f], "expected a probability in [0, 1]")
    if cfg.mask_prob + cfg.random_prob > 1.0 + 1e-9:
        _fail("random_prob", cfg.random_prob, f"mask_prob + random_prob = {cfg.mask_prob + cfg.random_prob} > 1")
    if not (0.0 <= cfg.tlm_rate < 1.0):
        _fail("tlm_rate", cfg.tlm_rate, "expected 0 <= tlm_rate < 1 (MLM rows must remain)")
    if not (isinstance(cfg.shuffle_buffer, int) and cfg.shuffle_buffer >= 0):
        _fail("shuffle_buffer", cfg.shuffle_buffer, "expected an int >= 0 (0 = no shuffling)")
    if not cfg.vocab_path:
        _fail("vocab_path", cfg.vocab_path, "a SentencePiece model path is required")
    for lang, n in dict(cfg.sizes).items():
        if not (isinstance(n, int | float) and n > 0):
            _fail(f"sizes.{lang}", n, "expected a positive number of examples")
