"""Held-out text for the evals: the last 10 % of each language's monolingual lines (``sample.split_lines``), of
the shipped sample or of a folder of ``<lang>.txt`` files; or the transfer task's dev strings by language, a
development set disjoint from the validation lines, for choices that must not be made on the reported text."""

from __future__ import annotations

import os
from collections.abc import Sequence

from data_pipelines import sample
from xlmp_jax.evals.context import split_list


def validation_texts(languages: Sequence[str], max_sentences: int, text_dir: str = "") -> dict[str, list[str]]:
    """Held-out lines (the last 10 %, ``sample.split_lines``) of each language's monolingual file: the
    shipped sample's, or ``text_dir/<lang>.txt``. Non-empty lines, at most ``max_sentences`` (0 = all)."""
    texts = {}
    for lang in languages:
        path = os.path.join(text_dir, f"{lang}.txt") if text_dir else sample.mono_path(lang)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no text file for language {lang!r}: {path!r}")
        with open(path, encoding="utf-8") as f:
            lines = [line.strip() for line in f]
        lines = [line for line in sample.split_lines(lines, "validation") if line]
        texts[lang] = lines[:max_sentences] if max_sentences else lines
    return texts


def transfer_dev_texts(languages: Sequence[str], max_sentences: int) -> dict[str, list[str]]:
    """The transfer task's ``dev`` strings (``sample.read_transfer``) of each language, English and translations:
    evaluation text that no training split holds, without those equal to a sentence a report reads (a
    validation line, a held-out pair, a test string: ``sample.reported_sentences``). At most ``max_sentences``
    a language (0 = all); ValueError naming a language that has none."""
    reported = sample.reported_sentences()
    found: dict[str, list[str]] = {}
    for item in sample.read_transfer("dev"):
        for lang, text in (("en", item.english), *item.translations.items()):
            if sample.normalize(text) not in reported:
                found.setdefault(lang, []).append(text)
    missing = [lang for lang in languages if lang not in found]
    if missing:
        raise ValueError(f"no transfer dev strings for {missing}; languages that have some: {sorted(found)}")
    return {lang: found[lang][:max_sentences] if max_sentences else found[lang] for lang in languages}


def transfer_dev_pairs(languages: Sequence[str], max_pairs: int) -> dict[str, tuple[list[str], list[str]]]:
    """{language: (english, translation)}: the transfer task's ``dev`` strings and their translations, a pair
    for retrieval without a sentence a report reads (either side equal to one of ``sample.reported_sentences``
    drops the pair). At most ``max_pairs`` a language (0 = all); ValueError naming a language that has none."""
    reported = sample.reported_sentences()
    found: dict[str, tuple[list[str], list[str]]] = {}
    for item in sample.read_transfer("dev"):
        if sample.normalize(item.english) in reported:
            continue
        for lang, text in item.translations.items():
            if sample.normalize(text) not in reported:
                english, other = found.setdefault(lang, ([], []))
                english.append(item.english)
                other.append(text)
    missing = [lang for lang in languages if lang not in found]
    if missing:
        raise ValueError(f"no transfer dev pairs for {missing}; languages that have some: {sorted(found)}")
    cut = max_pairs or None
    return {lang: (found[lang][0][:cut], found[lang][1][:cut]) for lang in languages}


def transfer_dev_languages() -> list[str]:
    """Languages with transfer dev strings, in the sample's order."""
    have = {"en"} | {lang for item in sample.read_transfer("dev") for lang in item.translations}
    return [lang for lang in sample.languages() if lang in have]


def text_languages(setting: str, text_dir: str = "") -> list[str]:
    """The ``languages`` setting, or every ``<lang>.txt`` of ``text_dir``, or every sample language."""
    if split_list(setting):
        return split_list(setting)
    if text_dir:
        if not os.path.isdir(text_dir):
            raise FileNotFoundError(f"text_dir {text_dir!r} is not a directory")
        return sorted(n[: -len(".txt")] for n in os.listdir(text_dir) if n.endswith(".txt"))
    return sample_languages("")


def sample_languages(setting: str) -> list[str]:
    """The ``languages`` setting, or every language of the shipped sample."""
    return split_list(setting) or list(sample.languages())
