"""The shipped sample corpus: languages, scripts, parallel sizes, clean UTF-8, provenance, the split rule."""

import collections
import os
import unicodedata

import pytest

from data_pipelines import sample

ALIASES = {"CJK": "HAN", "HIRAGANA": "KANA", "KATAKANA": "KANA"}


def dominant_script(text: str) -> str:
    counts = collections.Counter()
    for ch in text:
        if unicodedata.category(ch).startswith("L"):
            first = unicodedata.name(ch, "?").split()[0]
            counts[ALIASES.get(first, first)] += 1
    return counts.most_common(1)[0][0]


def all_files():
    files = [os.path.relpath(sample.mono_path(lang), sample.SAMPLE_DIR) for lang in sample.languages()]
    files += [os.path.relpath(sample.parallel_path(lang), sample.SAMPLE_DIR) for lang in sample.parallel_languages()]
    return files


def test_at_least_15_languages_and_8_scripts():
    langs = sample.languages()
    assert len(langs) >= 15
    scripts = {lang: dominant_script("".join(sample.read_mono(lang)[:200])) for lang in langs}
    distinct = set(scripts.values())
    assert len(distinct) >= 8, distinct
    for needed in ("LATIN", "CYRILLIC", "GREEK", "ARABIC", "HEBREW", "DEVANAGARI", "HAN", "HANGUL", "THAI"):
        assert needed in distinct, needed
    assert scripts["ru"] == "CYRILLIC" and scripts["el"] == "GREEK" and scripts["zh"] == "HAN"
    assert scripts["ko"] == "HANGUL" and scripts["th"] == "THAI" and scripts["hi"] == "DEVANAGARI"
    # Low-resource languages are in too.
    assert {"cy", "eu", "ga", "sw", "am", "xh"} <= set(langs)


def test_mono_files_are_clean_utf8_without_empty_lines():
    for lang in sample.languages():
        raw = open(sample.mono_path(lang), "rb").read()
        text = raw.decode("utf-8")  # raises on invalid UTF-8
        lines = text.split("\n")
        assert lines[-1] == "", f"{lang}: missing final newline"
        lines = lines[:-1]
        assert len(lines) >= 150, (lang, len(lines))
        assert all(line.strip() == line and line for line in lines), lang
        assert len(set(lines)) == len(lines), f"{lang}: duplicate lines"
        assert "\t" not in text and "\r" not in text


def test_parallel_sets():
    langs = sample.parallel_languages()
    assert len(langs) >= 10
    for lang in langs:
        pairs = sample.read_parallel(lang)
        assert len(pairs) >= 200, (lang, len(pairs))
        assert all(en and other and en != other for en, other in pairs), lang
        assert dominant_script("".join(en for en, _ in pairs[:100])) == "LATIN"
    scripts = {dominant_script("".join(o for _, o in sample.read_parallel(lang)[:100])) for lang in langs}
    assert len(scripts) >= 6, scripts


def test_provenance_lists_every_file():
    text = open(os.path.join(sample.SAMPLE_DIR, "PROVENANCE.md"), encoding="utf-8").read()
    for rel in all_files():
        assert f"`{rel}`" in text, rel
    assert "licence" in text.lower()


def test_split_lines_rule():
    lines = [f"l{i}" for i in range(25)]
    assert sample.split_lines(lines, "validation") == ["l22", "l23", "l24"]  # ceil(10 % of 25) = 3
    assert sample.split_lines(lines, "train") == lines[:22]
    assert sample.split_lines(lines[:10], "validation") == ["l9"]
    assert sample.split_lines(lines[:1], "validation") == ["l0"] and sample.split_lines(lines[:1], "train") == []
    for lang in ("en", "de", "zh"):
        full = sample.read_mono(lang)
        train, val = sample.read_mono(lang, "train"), sample.read_mono(lang, "validation")
        assert train + val == full and len(val) == -(-len(full) // 10)
    with pytest.raises(ValueError, match="'test'"):
        sample.split_lines(lines, "test")


def test_unknown_language_is_named():
    with pytest.raises(ValueError, match="'xx'"):
        sample.mono_path("xx")
    with pytest.raises(ValueError, match="'xx'"):
        sample.parallel_path("xx")
