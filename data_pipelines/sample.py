"""The sample corpus shipped in `data_pipelines/sample/` (real translated text; see its PROVENANCE.md).

Layout: `mono/<lang>.txt` (UTF-8, one sentence a line) and `parallel/en-<lang>.tsv` (English TAB other).

Held-out rule shared by the whole project (every consumer reads its splits through this module):

- mono: the last 10 % of a file's lines (rounded up) are `validation` (`split_lines`); the files are
  shuffled when built, so they are a fair sample of the catalogs they came from.
- parallel: a pair is held out (`validation`: retrieval, fine-tune tests, TLM eval) when the hash of its
  *normalised English side* falls in the first `PARALLEL_EVAL_PERCENT` % (`is_eval_pair`). Hashing the
  English side holds out the same English sentence in every language, so the languages' pairs do not leak
  into each other through a shared English source.
- leakage: the evaluation set is every mono validation line and both sides of every held-out pair, of every
  language. A training line (mono `train`, either side of a TLM `train` pair; the fine-tune training data is
  the English side of the latter) whose `normalize`d form is in that set is dropped (`eval_sentences`).

`normalize` = Unicode NFKC, case fold, punctuation (categories P*) to spaces, whitespace collapsed.
"""

from __future__ import annotations

import functools
import hashlib
import os
import unicodedata
from collections.abc import Iterable, Sequence

SAMPLE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sample")
SPLITS = ("train", "validation")
VALIDATION_FRACTION = 0.1
PARALLEL_EVAL_PERCENT = 25  # ~200 of 800 pairs per language for retrieval: our choice


def languages() -> list[str]:
    """Language codes with a monolingual file, sorted."""
    return sorted(
        name[: -len(".txt")] for name in os.listdir(os.path.join(SAMPLE_DIR, "mono")) if name.endswith(".txt")
    )


def parallel_languages() -> list[str]:
    """Languages paired with English in `parallel/en-<lang>.tsv`, sorted."""
    names = os.listdir(os.path.join(SAMPLE_DIR, "parallel"))
    return sorted(n[len("en-") : -len(".tsv")] for n in names if n.startswith("en-") and n.endswith(".tsv"))


def mono_path(lang: str) -> str:
    """Path of `mono/<lang>.txt`; ValueError naming the language (and the known ones) if there is none."""
    path = os.path.join(SAMPLE_DIR, "mono", f"{lang}.txt")
    if not os.path.isfile(path):
        raise ValueError(f"unknown sample language {lang!r}; the sample has: {', '.join(languages())}")
    return path


def parallel_path(lang: str) -> str:
    """Path of `parallel/en-<lang>.tsv`; ValueError naming the language (and the known ones) if there is none."""
    path = os.path.join(SAMPLE_DIR, "parallel", f"en-{lang}.tsv")
    if not os.path.isfile(path):
        raise ValueError(f"no parallel sample for {lang!r}; English is paired with: {', '.join(parallel_languages())}")
    return path


def num_validation(num_lines: int) -> int:
    """How many trailing lines form the validation split: ceil(10 %), so any file of >= 1 line has one."""
    return -(-num_lines // 10)


def split_lines(lines: Sequence[str], split: str) -> list[str]:
    """The `train` (first ~90 %) or `validation` (last ceil(10 %)) lines of one file, in file order."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    cut = len(lines) - num_validation(len(lines))
    return list(lines[:cut] if split == "train" else lines[cut:])


def _check_split(split: str | None) -> None:
    if split is not None and split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")


def normalize(text: str) -> str:
    """The form in which sentences are compared for leakage: NFKC, case-folded, punctuation to spaces,
    whitespace collapsed. "Open the file." and "open  the FILE" are the same sentence."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text)
    return " ".join(text.split())


def is_eval_pair(english: str, percent: int = PARALLEL_EVAL_PERCENT) -> bool:
    """Whether a pair with this English side is held out: a stable hash of the normalised English, so the
    choice depends neither on file order nor on the language it is paired with."""
    digest = hashlib.sha1(normalize(english).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % 100 < percent


def split_pairs(pairs: Sequence[tuple[str, str]], split: str) -> list[tuple[str, str]]:
    """The held-out (`validation`) or remaining (`train`) pairs, in file order, before leakage filtering."""
    _check_split(split)
    return [p for p in pairs if is_eval_pair(p[0]) == (split == "validation")]


def _read_lines(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return f.read().splitlines()


def _read_pairs(lang: str) -> list[tuple[str, str]]:
    pairs = []
    for i, line in enumerate(_read_lines(parallel_path(lang)), 1):
        en, sep, other = line.partition("\t")
        if not sep:
            raise ValueError(f"{parallel_path(lang)}:{i}: expected 'English<TAB>{lang}', got {line[:60]!r}")
        pairs.append((en, other))
    return pairs


def eval_sentences() -> frozenset[str]:
    """Normalised evaluation sentences of the whole sample: every mono validation line and both sides of
    every held-out pair, all languages. No training split contains one of them (empty forms excluded)."""
    return _eval_sentences(SAMPLE_DIR)


@functools.cache
def _eval_sentences(sample_dir: str) -> frozenset[str]:
    del sample_dir  # the cache key: tests point SAMPLE_DIR at a stand-in folder
    found: set[str] = set()
    for lang in languages():
        found.update(normalize(line) for line in split_lines(_read_lines(mono_path(lang)), "validation"))
    for lang in parallel_languages():
        found.update(normalize(s) for pair in split_pairs(_read_pairs(lang), "validation") for s in pair)
    found.discard("")
    return frozenset(found)


def leak_free(lines: Iterable[str]) -> list[str]:
    """`lines` without those whose normalised form is an evaluation sentence (`eval_sentences`)."""
    held = eval_sentences()
    return [line for line in lines if normalize(line) not in held]


def read_mono(lang: str, split: str | None = None) -> list[str]:
    """Lines of `mono/<lang>.txt`: all of them, the `validation` lines, or the leakage-free `train` lines."""
    _check_split(split)
    lines = _read_lines(mono_path(lang))
    if split is None:
        return lines
    lines = split_lines(lines, split)
    return leak_free(lines) if split == "train" else lines


def read_parallel(lang: str, split: str | None = None) -> list[tuple[str, str]]:
    """(English, other) pairs of `parallel/en-<lang>.tsv`: all of them, the held-out `validation` pairs, or
    the leakage-free `train` pairs (neither side an evaluation sentence)."""
    _check_split(split)
    pairs = _read_pairs(lang)
    if split is None:
        return pairs
    pairs = split_pairs(pairs, split)
    if split == "validation":
        return pairs
    held = eval_sentences()
    return [p for p in pairs if normalize(p[0]) not in held and normalize(p[1]) not in held]
