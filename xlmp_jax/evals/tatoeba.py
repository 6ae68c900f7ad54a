"""The sweep's ``tatoeba`` eval: XTREME's Tatoeba retrieval from TFDS or the task's own files.

Sources: TFDS's ``tatoeba`` builder (config ``tatoeba_<xx>``, one ``train`` split of ``source_sentence`` (xx)
/ ``target_sentence`` (English) records), or a folder of LASER's line-aligned ``tatoeba.<xxx>-eng.<xxx>`` and
``tatoeba.<xxx>-eng.eng`` files (three-letter codes as LASER ships them, or two-letter ones as XTREME's
preprocessing renames them). Scoring is ``retrieval.retrieval_eval``: mean-pooled hidden states of ``layer``
(default XTREME's, ``encoder.xtreme_layer``), cosine, top-1 accuracy xx -> en and en -> xx.
"""

from __future__ import annotations

import os
from typing import Any

import ml_collections

from xlmp_jax.evals import retrieval
from xlmp_jax.evals.context import EvalContext, Row, split_list

NAME = "tatoeba"

# XTREME's 36 Tatoeba languages: two-letter code -> LASER's three-letter file code
LASER_CODES = {
    "af": "afr", "ar": "ara", "bg": "bul", "bn": "ben", "de": "deu", "el": "ell", "es": "spa", "et": "est",
    "eu": "eus", "fa": "pes", "fi": "fin", "fr": "fra", "he": "heb", "hi": "hin", "hu": "hun", "id": "ind",
    "it": "ita", "ja": "jpn", "jv": "jav", "ka": "kat", "kk": "kaz", "ko": "kor", "ml": "mal", "mr": "mar",
    "nl": "nld", "pt": "por", "ru": "rus", "sw": "swh", "ta": "tam", "te": "tel", "th": "tha", "tl": "tgl",
    "tr": "tur", "ur": "urd", "vi": "vie", "zh": "cmn",
}  # fmt: skip


def config() -> ml_collections.ConfigDict:
    """The sweep config's ``tatoeba`` block."""
    return ml_collections.ConfigDict(
        dict(
            source="auto",  # auto (tfds if data_dir, else local) | tfds | local
            data_dir="",  # TFDS data_dir with tatoeba/tatoeba_<xx> prepared
            dir="",  # folder of tatoeba.<xxx>-eng.<xxx> / tatoeba.<xxx>-eng.eng files
            languages="",  # '' = XTREME's 36 (tfds) / every pair found (local)
            max_pairs=0,  # per language; 0 = all (1000 each in XTREME's set)
            layer="xtreme",  # hidden state mean-pooled: xtreme (8 of 12, 14 of 24) | middle | last | 0..L
        )
    )


def _file_pair(directory: str, lang: str) -> tuple[str, str] | None:
    for code in (LASER_CODES.get(lang, lang), lang):
        other = os.path.join(directory, f"tatoeba.{code}-eng.{code}")
        english = os.path.join(directory, f"tatoeba.{code}-eng.eng")
        if os.path.isfile(other):
            if not os.path.isfile(english):
                raise FileNotFoundError(f"Tatoeba {lang}: {english!r} does not exist (its pair {other!r} does)")
            return other, english
    return None


def _lines(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        lines = [line.rstrip("\r\n").strip() for line in f]
    for number, line in enumerate(lines, start=1):
        if not line:
            raise ValueError(f"{path}:{number}: empty line (Tatoeba files hold one sentence per line)")
    if not lines:
        raise ValueError(f"Tatoeba file {path!r} holds no sentences")
    return lines


def read_local(directory: str, lang: str, max_pairs: int = 0) -> tuple[list[str], list[str]]:
    """(english, other) of one language's line-aligned files; unequal line counts are an error."""
    found = _file_pair(directory, lang)
    if found is None:
        code = LASER_CODES.get(lang, lang)
        raise FileNotFoundError(
            f"Tatoeba {lang}: no tatoeba.{code}-eng.{code} (or tatoeba.{lang}-eng.{lang}) in {directory!r}"
        )
    other_path, english_path = found
    other, english = _lines(other_path), _lines(english_path)
    if len(other) != len(english):
        raise ValueError(
            f"Tatoeba {lang}: {other_path!r} has {len(other)} lines but {english_path!r} has {len(english)}"
        )
    return english[: max_pairs or None], other[: max_pairs or None]


def local_languages(directory: str) -> list[str]:
    """Two-letter codes (three-letter where unknown) of every ``tatoeba.<x>-eng.<x>`` file in ``directory``."""
    to_two = {v: k for k, v in LASER_CODES.items()}
    found = []
    for name in os.listdir(directory):
        parts = name.split(".")
        if len(parts) == 3 and parts[0] == "tatoeba" and parts[1] == f"{parts[2]}-eng" and parts[2] != "eng":
            found.append(to_two.get(parts[2], parts[2]))
    return sorted(found)


def _text(value: Any) -> str:
    return (value.decode("utf-8") if isinstance(value, bytes) else str(value)).strip()


def read_tfds(lang: str, data_dir: str, max_pairs: int = 0) -> tuple[list[str], list[str]]:
    """(english, other) of TFDS ``tatoeba/tatoeba_<lang>`` (its one split, ``train``)."""
    import tensorflow_datasets as tfds  # TensorFlow: seconds to import, only for a TFDS source

    if lang not in LASER_CODES:
        raise ValueError(f"TFDS tatoeba has no language {lang!r} (has: {sorted(LASER_CODES)})")
    builder = tfds.builder(f"tatoeba/tatoeba_{lang}", data_dir=data_dir or None)
    try:
        dataset = builder.as_dataset(split="train")
    except AssertionError as e:  # TFDS asserts when the data was never prepared in data_dir
        raise FileNotFoundError(f"TFDS tatoeba/tatoeba_{lang} is not prepared in data_dir {data_dir!r} ({e})") from None
    english, other = [], []
    for ex in tfds.as_numpy(dataset):
        english.append(_text(ex["target_sentence"]))
        other.append(_text(ex["source_sentence"]))
        if max_pairs and len(english) >= max_pairs:
            break
    if not english:
        raise ValueError(f"TFDS tatoeba/tatoeba_{lang} holds no pairs")
    return english, other


def tatoeba_pairs(settings: ml_collections.ConfigDict) -> dict[str, tuple[list[str], list[str]]]:
    """{language: (english, other)} from TFDS or the local files, per ``settings.source``."""
    source = settings.source
    if source == "auto":
        source = "tfds" if settings.data_dir else "local"
    if source == "tfds":
        languages = split_list(settings.languages) or sorted(LASER_CODES)
        return {lang: read_tfds(lang, settings.data_dir, settings.max_pairs) for lang in languages}
    if source == "local":
        if not settings.dir:
            raise ValueError("tatoeba: set tatoeba.dir (local files) or tatoeba.data_dir (TFDS)")
        if not os.path.isdir(settings.dir):
            raise FileNotFoundError(f"tatoeba.dir {settings.dir!r} is not a directory")
        languages = split_list(settings.languages) or local_languages(settings.dir)
        if not languages:
            raise FileNotFoundError(f"tatoeba.dir {settings.dir!r} holds no tatoeba.<xxx>-eng.<xxx> file")
        return {lang: read_local(settings.dir, lang, settings.max_pairs) for lang in languages}
    raise ValueError(f"tatoeba.source={settings.source!r} is not one of auto, tfds, local")


def run(ctx: EvalContext, cfg: ml_collections.ConfigDict) -> list[Row]:
    """Tatoeba rows (acc_xx_to_en, acc_en_to_xx, acc_mean per language; an ``all`` mean) of one checkpoint."""
    pairs = tatoeba_pairs(cfg)  # bad files fail before anything is embedded
    return retrieval.retrieval_eval(ctx.encoder, ctx.tokenizer, pairs, cfg.layer)
