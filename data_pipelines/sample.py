"""The sample corpus shipped in `data_pipelines/sample/` (real translated text; see its PROVENANCE.md).

Layout: `mono/<lang>.txt` (UTF-8, one sentence a line), `parallel/en-<lang>.tsv` (English TAB other) and
`transfer/packages.tsv` (a header `label<TAB>en<TAB><lang>...`, then one English string a line with its label
and translations; an empty cell = not translated).

Held-out rule shared by the whole project (every consumer reads its splits through this module):

- mono: the last 10 % of a file's lines (rounded up) are `validation` (`split_lines`); the files are
  shuffled when built, so they are a fair sample of the catalogs they came from.
- parallel: a pair is held out (`validation`: retrieval, fine-tune tests, TLM eval) when the hash of its
  *normalised English side* falls in the first `PARALLEL_EVAL_PERCENT` % (`is_eval_pair`). Hashing the
  English side holds out the same English sentence in every language, so the languages' pairs do not leak
  into each other through a shared English source.
- transfer (`transfer/packages.tsv`: an English string, its package-group label and its translations): a
  stable hash of the *normalised English* puts each string, with all its translations, in `train` (English
  only, for fine-tuning), `dev` (English, for choosing fine-tuning settings) or `test` (every language)
  (`transfer_split`); test strings are translations of English strings never fine-tuned on.
- leakage: the evaluation set is every mono validation line, both sides of every held-out pair and every
  text (English and translations) of the transfer task's `dev` and `test` strings, of every language. A
  training line (mono `train`, either side of a TLM `train` pair, a fine-tuning string: the English side of
  the latter or a transfer `train` string) whose `normalize`d form is in that set is dropped
  (`eval_sentences`).

`normalize` = Unicode NFKC, case fold, punctuation (categories P*) to spaces, whitespace collapsed.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import unicodedata
from collections.abc import Iterable, Mapping, Sequence

SAMPLE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sample")
SPLITS = ("train", "validation")
VALIDATION_FRACTION = 0.1
PARALLEL_EVAL_PERCENT = 25  # ~200 of 800 pairs per language for retrieval: our choice
TRANSFER_FILE = os.path.join("transfer", "packages.tsv")
TRANSFER_SPLITS = ("train", "dev", "test")
# Percent of the transfer task's English strings in test and in dev (the rest: train). Our choice: test large
# enough for per-language accuracy (~500 strings), train enough to fine-tune on (~600).
TRANSFER_TEST_PERCENT, TRANSFER_DEV_PERCENT = 40, 15


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


@dataclasses.dataclass(frozen=True)
class TransferString:
    """One string of the transfer task: its label, the English source and its translations by language."""

    label: str
    english: str
    translations: Mapping[str, str]


def transfer_path() -> str:
    """Path of `transfer/packages.tsv` (which may be absent in a stand-in sample folder)."""
    return os.path.join(SAMPLE_DIR, TRANSFER_FILE)


def transfer_split(english: str) -> str:
    """`train`, `dev` or `test` of a transfer string: a stable hash of its normalised English (salted apart
    from `is_eval_pair`), so a string and all its translations land in one split whatever the file order."""
    digest = hashlib.sha1(f"transfer|{normalize(english)}".encode()).digest()
    bucket = int.from_bytes(digest[:8], "big") % 100
    if bucket < TRANSFER_TEST_PERCENT:
        return "test"
    return "dev" if bucket < TRANSFER_TEST_PERCENT + TRANSFER_DEV_PERCENT else "train"


def _read_transfer() -> list[TransferString]:
    path = transfer_path()
    if not os.path.isfile(path):
        return []
    lines = _read_lines(path)
    header = lines[0].split("\t") if lines else []
    if header[:2] != ["label", "en"]:
        raise ValueError(f"{path}:1: expected the header 'label<TAB>en<TAB><lang>...', got {lines[:1]!r}")
    found = []
    for i, line in enumerate(lines[1:], 2):
        cells = line.split("\t")
        if len(cells) != len(header) or not cells[0] or not cells[1]:
            raise ValueError(f"{path}:{i}: expected {len(header)} cells with a label and English, got {line[:60]!r}")
        found.append(
            TransferString(cells[0], cells[1], {k: v for k, v in zip(header[2:], cells[2:], strict=True) if v})
        )
    return found


def read_transfer(split: str | None = None) -> list[TransferString]:
    """The transfer task's strings in file order: all of them, or one split of `TRANSFER_SPLITS`; `train`
    drops a string whose English is an evaluation sentence (`eval_sentences`). Empty if the file is absent."""
    if split is not None and split not in TRANSFER_SPLITS:
        raise ValueError(f"unknown transfer split {split!r}; expected one of {TRANSFER_SPLITS}")
    items = _read_transfer()
    if split is None:
        return items
    items = [it for it in items if transfer_split(it.english) == split]
    if split != "train":
        return items
    held = eval_sentences()
    return [it for it in items if normalize(it.english) not in held]


def eval_sentences() -> frozenset[str]:
    """Normalised evaluation sentences of the whole sample: every mono validation line, both sides of every
    held-out pair and every text of the transfer task's dev and test strings, all languages. No training
    split contains one of them (empty forms excluded)."""
    return _eval_sentences(SAMPLE_DIR, ("dev", "test"))


def reported_sentences() -> frozenset[str]:
    """The evaluation sentences that reports are made on: `eval_sentences` without the transfer dev strings,
    which serve as a development set (a dev string equal to one of these is no longer dev text)."""
    return _eval_sentences(SAMPLE_DIR, ("test",))


@functools.cache
def _eval_sentences(sample_dir: str, transfer_splits: tuple[str, ...]) -> frozenset[str]:
    del sample_dir  # the cache key: tests point SAMPLE_DIR at a stand-in folder
    found: set[str] = set()
    for lang in languages():
        found.update(normalize(line) for line in split_lines(_read_lines(mono_path(lang)), "validation"))
    for lang in parallel_languages():
        found.update(normalize(s) for pair in split_pairs(_read_pairs(lang), "validation") for s in pair)
    for item in _read_transfer():
        if transfer_split(item.english) in transfer_splits:
            found.update(normalize(text) for text in (item.english, *item.translations.values()))
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
