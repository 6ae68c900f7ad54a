"""Language metadata: ISO 639 code -> name, writing system and genealogy, for every sample language.

The clustering evals ask whether the prompt pool routes related languages together, so they need a
linguistic answer key that does not come from the model: which languages share a script and which share
ancestry. Granularity, chosen once for every row:

- ``script``: the ISO 15924 code of the script the language is normally written in (the CLDR
  "likely subtags" script, e.g. sr -> Cyrl, zh -> Hans, ja -> Jpan, ko -> Kore). A variant tag such as
  ``sr@latin`` or a script subtag (``zh_Hant``, ``uz-Cyrl``) overrides it; a region (``pt_BR``) does not
  change it, except ``zh_TW`` / ``zh_HK`` / ``zh_MO``, which are written in Hant.
- ``family``: the top-level genealogical family (Indo-European, Turkic, Afro-Asiatic, ...). Isolates
  and constructed languages are their own family ("Basque", "Constructed").
- ``branch``: the genus, a group about as deep as Germanic or Romance (the level of WALS genera), so
  that the "different family" question is informative inside Indo-European, which holds more than half
  of the sample. Languages that are alone in their family have the family's name as branch.
"""

from __future__ import annotations

import re
from typing import NamedTuple

UNKNOWN = "unknown"


class Language(NamedTuple):
    name: str
    script: str  # ISO 15924
    family: str  # top-level family
    branch: str  # genus, about as deep as Germanic / Romance


_IE = "Indo-European"
_AA = "Afro-Asiatic"
_NC = "Niger-Congo"
_ST = "Sino-Tibetan"
_AN = "Austronesian"
_AUA = "Austroasiatic"

LANGUAGES: dict[str, Language] = {
    # Indo-European: Germanic
    "af": Language("Afrikaans", "Latn", _IE, "Germanic"),
    "da": Language("Danish", "Latn", _IE, "Germanic"),
    "de": Language("German", "Latn", _IE, "Germanic"),
    "en": Language("English", "Latn", _IE, "Germanic"),
    "fy": Language("Western Frisian", "Latn", _IE, "Germanic"),
    "is": Language("Icelandic", "Latn", _IE, "Germanic"),
    "li": Language("Limburgish", "Latn", _IE, "Germanic"),
    "nb": Language("Norwegian Bokmal", "Latn", _IE, "Germanic"),
    "nds": Language("Low German", "Latn", _IE, "Germanic"),
    "nl": Language("Dutch", "Latn", _IE, "Germanic"),
    "nn": Language("Norwegian Nynorsk", "Latn", _IE, "Germanic"),
    "sv": Language("Swedish", "Latn", _IE, "Germanic"),
    "yi": Language("Yiddish", "Hebr", _IE, "Germanic"),
    # Indo-European: Romance
    "an": Language("Aragonese", "Latn", _IE, "Romance"),
    "ast": Language("Asturian", "Latn", _IE, "Romance"),
    "ca": Language("Catalan", "Latn", _IE, "Romance"),
    "co": Language("Corsican", "Latn", _IE, "Romance"),
    "es": Language("Spanish", "Latn", _IE, "Romance"),
    "fr": Language("French", "Latn", _IE, "Romance"),
    "fur": Language("Friulian", "Latn", _IE, "Romance"),
    "gl": Language("Galician", "Latn", _IE, "Romance"),
    "it": Language("Italian", "Latn", _IE, "Romance"),
    "oc": Language("Occitan", "Latn", _IE, "Romance"),
    "pt": Language("Portuguese", "Latn", _IE, "Romance"),
    "ro": Language("Romanian", "Latn", _IE, "Romance"),
    "wa": Language("Walloon", "Latn", _IE, "Romance"),
    # Indo-European: Slavic
    "be": Language("Belarusian", "Cyrl", _IE, "Slavic"),
    "bg": Language("Bulgarian", "Cyrl", _IE, "Slavic"),
    "bs": Language("Bosnian", "Latn", _IE, "Slavic"),
    "cs": Language("Czech", "Latn", _IE, "Slavic"),
    "hr": Language("Croatian", "Latn", _IE, "Slavic"),
    "mk": Language("Macedonian", "Cyrl", _IE, "Slavic"),
    "pl": Language("Polish", "Latn", _IE, "Slavic"),
    "ru": Language("Russian", "Cyrl", _IE, "Slavic"),
    "sk": Language("Slovak", "Latn", _IE, "Slavic"),
    "sl": Language("Slovenian", "Latn", _IE, "Slavic"),
    "sr": Language("Serbian", "Cyrl", _IE, "Slavic"),
    "uk": Language("Ukrainian", "Cyrl", _IE, "Slavic"),
    # Indo-European: other branches
    "lt": Language("Lithuanian", "Latn", _IE, "Baltic"),
    "lv": Language("Latvian", "Latn", _IE, "Baltic"),
    "br": Language("Breton", "Latn", _IE, "Celtic"),
    "cy": Language("Welsh", "Latn", _IE, "Celtic"),
    "ga": Language("Irish", "Latn", _IE, "Celtic"),
    "gd": Language("Scottish Gaelic", "Latn", _IE, "Celtic"),
    "gv": Language("Manx", "Latn", _IE, "Celtic"),
    "el": Language("Greek", "Grek", _IE, "Greek"),
    "hy": Language("Armenian", "Armn", _IE, "Armenian"),
    "sq": Language("Albanian", "Latn", _IE, "Albanian"),
    "as": Language("Assamese", "Beng", _IE, "Indo-Aryan"),
    "bn": Language("Bengali", "Beng", _IE, "Indo-Aryan"),
    "gu": Language("Gujarati", "Gujr", _IE, "Indo-Aryan"),
    "hi": Language("Hindi", "Deva", _IE, "Indo-Aryan"),
    "mai": Language("Maithili", "Deva", _IE, "Indo-Aryan"),
    "mr": Language("Marathi", "Deva", _IE, "Indo-Aryan"),
    "ne": Language("Nepali", "Deva", _IE, "Indo-Aryan"),
    "or": Language("Odia", "Orya", _IE, "Indo-Aryan"),
    "pa": Language("Punjabi", "Guru", _IE, "Indo-Aryan"),
    "si": Language("Sinhala", "Sinh", _IE, "Indo-Aryan"),
    "ckb": Language("Central Kurdish", "Arab", _IE, "Iranian"),
    "fa": Language("Persian", "Arab", _IE, "Iranian"),
    "ku": Language("Kurdish (Kurmanji)", "Latn", _IE, "Iranian"),
    "ps": Language("Pashto", "Arab", _IE, "Iranian"),
    "tg": Language("Tajik", "Cyrl", _IE, "Iranian"),
    # Turkic
    "az": Language("Azerbaijani", "Latn", "Turkic", "Turkic"),
    "crh": Language("Crimean Tatar", "Latn", "Turkic", "Turkic"),
    "kk": Language("Kazakh", "Cyrl", "Turkic", "Turkic"),
    "ky": Language("Kyrgyz", "Cyrl", "Turkic", "Turkic"),
    "tk": Language("Turkmen", "Latn", "Turkic", "Turkic"),
    "tr": Language("Turkish", "Latn", "Turkic", "Turkic"),
    "tt": Language("Tatar", "Cyrl", "Turkic", "Turkic"),
    "ug": Language("Uyghur", "Arab", "Turkic", "Turkic"),
    "uz": Language("Uzbek", "Latn", "Turkic", "Turkic"),
    # Uralic
    "et": Language("Estonian", "Latn", "Uralic", "Finnic"),
    "fi": Language("Finnish", "Latn", "Uralic", "Finnic"),
    "hu": Language("Hungarian", "Latn", "Uralic", "Ugric"),
    # Afro-Asiatic
    "am": Language("Amharic", "Ethi", _AA, "Semitic"),
    "ar": Language("Arabic", "Arab", _AA, "Semitic"),
    "he": Language("Hebrew", "Hebr", _AA, "Semitic"),
    "kab": Language("Kabyle", "Latn", _AA, "Berber"),
    "ha": Language("Hausa", "Latn", _AA, "Chadic"),
    # Niger-Congo
    "kg": Language("Kongo", "Latn", _NC, "Bantu"),
    "lg": Language("Ganda", "Latn", _NC, "Bantu"),
    "ln": Language("Lingala", "Latn", _NC, "Bantu"),
    "nso": Language("Northern Sotho", "Latn", _NC, "Bantu"),
    "sw": Language("Swahili", "Latn", _NC, "Bantu"),
    "xh": Language("Xhosa", "Latn", _NC, "Bantu"),
    "zu": Language("Zulu", "Latn", _NC, "Bantu"),
    "ig": Language("Igbo", "Latn", _NC, "Igboid"),
    "ff": Language("Fula", "Latn", _NC, "Atlantic"),
    # Nilo-Saharan
    "ach": Language("Acholi", "Latn", "Nilo-Saharan", "Nilotic"),
    # Dravidian
    "kn": Language("Kannada", "Knda", "Dravidian", "Southern Dravidian"),
    "ml": Language("Malayalam", "Mlym", "Dravidian", "Southern Dravidian"),
    "ta": Language("Tamil", "Taml", "Dravidian", "Southern Dravidian"),
    "te": Language("Telugu", "Telu", "Dravidian", "South-Central Dravidian"),
    # Sino-Tibetan
    "zh": Language("Chinese", "Hans", _ST, "Sinitic"),
    "brx": Language("Bodo", "Deva", _ST, "Bodo-Garo"),
    "mjw": Language("Karbi", "Latn", _ST, "Karbi"),
    # Austronesian
    "id": Language("Indonesian", "Latn", _AN, "Malayic"),
    "ms": Language("Malay", "Latn", _AN, "Malayic"),
    "mg": Language("Malagasy", "Latn", _AN, "Barito"),
    "tl": Language("Tagalog", "Latn", _AN, "Philippine"),
    # Austroasiatic, Tai-Kadai
    "km": Language("Khmer", "Khmr", _AUA, "Khmer"),
    "vi": Language("Vietnamese", "Latn", _AUA, "Vietic"),
    "th": Language("Thai", "Thai", "Tai-Kadai", "Tai"),
    # Families with one sample language, isolates, constructed languages
    "ja": Language("Japanese", "Jpan", "Japonic", "Japonic"),
    "ko": Language("Korean", "Kore", "Koreanic", "Koreanic"),
    "ka": Language("Georgian", "Geor", "Kartvelian", "Kartvelian"),
    "mn": Language("Mongolian", "Cyrl", "Mongolic", "Mongolic"),
    "ab": Language("Abkhaz", "Cyrl", "Northwest Caucasian", "Northwest Caucasian"),
    "eu": Language("Basque", "Latn", "Basque", "Basque"),
    "eo": Language("Esperanto", "Latn", "Constructed", "Constructed"),
    "ia": Language("Interlingua", "Latn", "Constructed", "Constructed"),
    "ie": Language("Interlingue", "Latn", "Constructed", "Constructed"),
    "io": Language("Ido", "Latn", "Constructed", "Constructed"),
}

# Variant tags (gettext's ``@variant``) and regions that change the script.
_VARIANT_SCRIPTS = {"latin": "Latn", "cyrillic": "Cyrl", "arabic": "Arab", "devanagari": "Deva"}
_HANT_REGIONS = {"TW", "HK", "MO"}
_TAG = re.compile(r"^([A-Za-z]{2,3})(?:[_-]([A-Za-z]{4}))?(?:[_-]([A-Za-z]{2}|\d{3}))?(?:\.[\w-]+)?(?:@(\w+))?$")


def parse(code: str) -> tuple[str, str | None, str | None, str | None]:
    """``'sr@latin'`` -> ('sr', None, None, 'latin'); ``'zh_Hant_TW'`` -> ('zh', 'Hant', 'TW', None).

    Accepts gettext locale names (``pt_BR``, ``sr@latin``, ``de_DE.UTF-8``) and BCP 47 tags (``pt-BR``,
    ``uz-Cyrl``); raises ValueError naming ``code`` otherwise."""
    match = _TAG.match(code.strip())
    if not match:
        raise ValueError(f"language code {code!r} is not 'll', 'll_RR', 'll_Ssss' or 'll@variant'")
    base, script_tag, region, variant = match.groups()
    return (
        base.lower(),
        script_tag.title() if script_tag else None,
        region.upper() if region else None,
        variant.lower() if variant else None,
    )


def lookup(code: str) -> Language:
    """The table's row for ``code`` (its base language), with the script adjusted for a script subtag,
    a variant such as ``@latin`` or a traditional-Chinese region. Raises KeyError naming an unknown code."""
    base, script_tag, region, variant = parse(code)
    if base not in LANGUAGES:
        raise KeyError(f"language {code!r} (base {base!r}) is not in data_pipelines.languages.LANGUAGES")
    row = LANGUAGES[base]
    script_code = row.script
    if script_tag:
        script_code = script_tag
    elif variant in _VARIANT_SCRIPTS:
        script_code = _VARIANT_SCRIPTS[variant]
    elif base == "zh" and region in _HANT_REGIONS:
        script_code = "Hant"
    return row._replace(script=script_code)


def _field(code: str, name: str, default: str | None) -> str:
    try:
        return getattr(lookup(code), name)
    except (KeyError, ValueError):
        if default is None:
            raise
        return default


def script(code: str, default: str | None = None) -> str:
    """ISO 15924 script of ``code``; an unknown code raises KeyError unless ``default`` is given."""
    return _field(code, "script", default)


def family(code: str, default: str | None = None) -> str:
    """Top-level family of ``code``; an unknown code raises KeyError unless ``default`` is given."""
    return _field(code, "family", default)


def branch(code: str, default: str | None = None) -> str:
    """Genus of ``code`` (Germanic, Romance, Turkic, ...); an unknown code raises unless ``default``."""
    return _field(code, "branch", default)
