"""The sample corpus shipped in `data_pipelines/sample/` (real translated text; see its PROVENANCE.md).

Layout: `mono/<lang>.txt` (UTF-8, one sentence a line) and `parallel/en-<lang>.tsv` (English TAB other).
Held-out rule shared by the whole project: the last 10 % of a mono file's lines (rounded up) are the
`validation` split, the rest `train` (`split_lines`). The files are shuffled when built, so the validation
lines are a fair sample of the catalogs they came from.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

SAMPLE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sample")
SPLITS = ("train", "validation")
VALIDATION_FRACTION = 0.1


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


def read_mono(lang: str, split: str | None = None) -> list[str]:
    """Lines of `mono/<lang>.txt` (all of them, or one split)."""
    with open(mono_path(lang), encoding="utf-8") as f:
        lines = f.read().splitlines()
    return lines if split is None else split_lines(lines, split)


def read_parallel(lang: str) -> list[tuple[str, str]]:
    """(English, other) pairs of `parallel/en-<lang>.tsv`."""
    pairs = []
    with open(parallel_path(lang), encoding="utf-8") as f:
        for i, line in enumerate(f.read().splitlines(), 1):
            en, sep, other = line.partition("\t")
            if not sep:
                raise ValueError(f"{parallel_path(lang)}:{i}: expected 'English<TAB>{lang}', got {line[:60]!r}")
            pairs.append((en, other))
    return pairs
