"""Language metadata (data_pipelines.languages): coverage of the sample, scripts checked against the text."""

from __future__ import annotations

import collections
import unicodedata

import pytest

from data_pipelines import languages, sample

# First word of a letter's Unicode name -> ISO 15924 code (what the sample's text is written in).
UNICODE_SCRIPTS = {
    "LATIN": "Latn", "CYRILLIC": "Cyrl", "ARABIC": "Arab", "HEBREW": "Hebr", "GREEK": "Grek",
    "ARMENIAN": "Armn", "GEORGIAN": "Geor", "ETHIOPIC": "Ethi", "DEVANAGARI": "Deva", "BENGALI": "Beng",
    "GUJARATI": "Gujr", "GURMUKHI": "Guru", "ORIYA": "Orya", "TAMIL": "Taml", "TELUGU": "Telu",
    "KANNADA": "Knda", "MALAYALAM": "Mlym", "SINHALA": "Sinh", "THAI": "Thai", "KHMER": "Khmr",
    "HANGUL": "Kore", "HIRAGANA": "Jpan", "KATAKANA": "Jpan", "CJK": "Hans",
}  # fmt: skip


def dominant_script(path: str) -> str:
    """ISO 15924 code of most letters of a file; Japanese (kana + kanji) counts as Jpan as a whole."""
    counts: collections.Counter[str] = collections.Counter()
    with open(path, encoding="utf-8") as f:
        for ch in f.read():
            if ch.isalpha():
                counts[UNICODE_SCRIPTS.get(unicodedata.name(ch, "?").split()[0], "other")] += 1
    if counts["Jpan"]:
        counts["Jpan"] += counts.pop("Hans", 0)
    return counts.most_common(1)[0][0]


def test_table_covers_every_sample_language_with_its_written_script():
    codes = sample.languages()
    assert len(codes) == 114 and set(codes) <= set(languages.LANGUAGES)
    wrong = {c: (languages.script(c), dominant_script(sample.mono_path(c))) for c in codes}
    wrong = {c: pair for c, pair in wrong.items() if pair[0] != pair[1]}
    assert not wrong  # {code: (table, text)}
    for code in codes:
        row = languages.lookup(code)
        assert row.name and row.family and row.branch


def test_granularity_and_variants():
    assert languages.family("de") == languages.family("hi") == "Indo-European"
    assert (languages.branch("de"), languages.branch("nl"), languages.branch("fr")) == (
        "Germanic",
        "Germanic",
        "Romance",
    )
    assert languages.branch("tr") == languages.family("tr") == "Turkic"
    assert languages.script("sr") == "Cyrl" and languages.script("sr@latin") == "Latn"
    assert languages.script("uz@cyrillic") == "Cyrl" and languages.script("uz-Cyrl") == "Cyrl"
    assert languages.script("zh_CN") == "Hans" and languages.script("zh_TW") == "Hant"
    assert languages.script("zh-Hant-HK") == "Hant"
    assert languages.lookup("pt_BR") == languages.LANGUAGES["pt"]
    assert languages.script("de_DE.UTF-8") == "Latn"
    assert languages.parse("zh_Hant_TW") == ("zh", "Hant", "TW", None)


def test_unknown_codes_name_themselves():
    with pytest.raises(KeyError, match="'xx_YY'.*'xx'"):
        languages.script("xx_YY")
    with pytest.raises(ValueError, match="'not a code'"):
        languages.family("not a code")
    assert languages.script("xx", languages.UNKNOWN) == "unknown"
    assert languages.branch("???", "unknown") == "unknown"
