"""Extractive-QA scores as XTREME reports them: exact match and token F1 (0-100), max over the gold answers.

Two normalisations, each the one its official script uses:

* ``squad`` (SQuAD v1.1's script; XTREME scores XQuAD and TyDiQA-GoldP with it, whatever the language):
  lowercase, drop ASCII punctuation (``string.punctuation``), drop the English articles a/an/the as whole
  words, collapse whitespace; tokens are whitespace-separated.
* ``mlqa`` (MLQA's script, per language): lowercase, drop every Unicode punctuation character (category P*)
  and ``string.punctuation``, drop that language's articles, then tokenise: whitespace for en/es/hi/vi/de/ar,
  for zh each CJK character (U+4E00-U+9FA5) is a token of its own. MLQA's script knows only these seven
  languages; any other is refused. Its Arabic rule removes every occurrence of "ال" (the definite article),
  inside words too, as the script's pattern does.
"""

from __future__ import annotations

import collections
import re
import string
import unicodedata
from collections.abc import Sequence

NORMALISATIONS = ("squad", "mlqa")
MLQA_LANGUAGES = ("en", "es", "hi", "vi", "de", "ar", "zh")

_SQUAD_ARTICLES = re.compile(r"\b(a|an|the)\b")
_MLQA_ARTICLES = {
    "en": re.compile(r"\b(a|an|the)\b"),
    "es": re.compile(r"\b(un|una|unos|unas|el|la|los|las)\b"),
    "vi": re.compile(r"\b(của|là|cái|chiếc|những)\b"),
    "de": re.compile(r"\b(ein|eine|einen|einem|eines|einer|der|die|das|den|dem|des)\b"),
}
_CJK = re.compile(r"[\u4e00-\u9fa5]")


def _is_unicode_punctuation(char: str) -> bool:
    return char in string.punctuation or unicodedata.category(char).startswith("P")


def squad_normalise(text: str) -> str:
    """SQuAD v1.1's answer normalisation."""
    text = "".join(c for c in text.lower() if c not in string.punctuation)
    return " ".join(_SQUAD_ARTICLES.sub(" ", text).split())


def _mixed_segmentation(text: str) -> list[str]:
    """Whitespace tokens, with each CJK character (or punctuation mark) split off as a token of its own."""
    tokens: list[str] = []
    pending = ""
    for char in text:
        if _CJK.match(char) or _is_unicode_punctuation(char):
            tokens += pending.split()
            pending = ""
            tokens.append(char)
        else:
            pending += char
    return tokens + pending.split()


def mlqa_normalise(text: str, lang: str) -> str:
    """MLQA's per-language answer normalisation (``lang`` one of ``MLQA_LANGUAGES``)."""
    if lang not in MLQA_LANGUAGES:
        raise ValueError(f"MLQA normalisation has no rules for language {lang!r} (known: {MLQA_LANGUAGES})")
    text = "".join(c for c in text.lower() if not _is_unicode_punctuation(c))
    if lang in _MLQA_ARTICLES:
        text = _MLQA_ARTICLES[lang].sub(" ", text)
    elif lang == "ar":
        text = text.replace("ال", " ")
    tokens = _mixed_segmentation(text) if lang == "zh" else text.split()
    return " ".join(t for t in tokens if t.strip())


def normalise(text: str, normalisation: str, lang: str) -> str:
    if normalisation == "squad":
        return squad_normalise(text)
    if normalisation == "mlqa":
        return mlqa_normalise(text, lang)
    raise ValueError(f"normalisation {normalisation!r} is not one of {NORMALISATIONS}")


def exact_match(prediction: str, gold: str, normalisation: str = "squad", lang: str = "en") -> float:
    return float(normalise(prediction, normalisation, lang) == normalise(gold, normalisation, lang))


def f1(prediction: str, gold: str, normalisation: str = "squad", lang: str = "en") -> float:
    """Bag-of-tokens F1 of the normalised strings (0 when they share no token, even if both are empty)."""
    predicted = normalise(prediction, normalisation, lang).split()
    wanted = normalise(gold, normalisation, lang).split()
    same = sum((collections.Counter(predicted) & collections.Counter(wanted)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted), same / len(wanted)
    return 2 * precision * recall / (precision + recall)


def score(
    predictions: Sequence[str], golds: Sequence[Sequence[str]], normalisation: str = "squad", lang: str = "en"
) -> dict[str, float]:
    """``exact_match`` and ``f1`` in percent over questions, each question's best over its gold answers."""
    if len(predictions) != len(golds):
        raise ValueError(f"{len(predictions)} predictions for {len(golds)} questions")
    if not golds:
        raise ValueError(f"no questions to score ({lang})")
    for n, answers in enumerate(golds):
        if not answers:
            raise ValueError(f"question {n} ({lang}) has no gold answer")
    em = [max(exact_match(p, g, normalisation, lang) for g in gs) for p, gs in zip(predictions, golds, strict=True)]
    f = [max(f1(p, g, normalisation, lang) for g in gs) for p, gs in zip(predictions, golds, strict=True)]
    return {"exact_match": 100.0 * sum(em) / len(em), "f1": 100.0 * sum(f) / len(f)}
