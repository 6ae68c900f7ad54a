"""Small corpora and a tiny SentencePiece model for the data-pipeline tests (built once per session)."""

from __future__ import annotations

import os
import random

import sentencepiece as spm

WORDS = {
    "en": "the quick brown fox jumps over a lazy dog while seven cats watch quietly from home".split(),
    "fr": "le chat noir saute sur la table avec un chien blanc pendant que nous mangeons".split(),
    "ru": "быстрая коричневая лиса прыгает через ленивую собаку пока кошки смотрят домой".split(),
}
LINES = {"en": 400, "fr": 120, "ru": 60}


def make_corpus(root: str) -> dict[str, list[str]]:
    """`root/<lang>.txt`: unique numbered lines (some longer than a 32-token row), a blank line every 7."""
    rng = random.Random(0)
    os.makedirs(root, exist_ok=True)
    out: dict[str, list[str]] = {}
    for lang, words in WORDS.items():
        lines = []
        with open(os.path.join(root, f"{lang}.txt"), "w", encoding="utf-8") as f:
            for i in range(LINES[lang]):
                line = f"{lang} {i} " + " ".join(rng.choices(words, k=rng.randint(2, 30)))
                lines.append(line)
                f.write(line + "\n")
                if i % 7 == 6:
                    f.write("\n")
        out[lang] = lines
    return out


def train_spm(corpus_root: str, prefix: str) -> str:
    """A 300-piece BPE model with XLM-R's special-id layout (sentencepiece defaults: unk 0, bos 1, eos 2)."""
    files = [os.path.join(corpus_root, f"{lang}.txt") for lang in WORDS]
    spm.SentencePieceTrainer.train(
        input=files, model_prefix=prefix, vocab_size=300, model_type="bpe", character_coverage=1.0, minloglevel=2
    )
    return prefix + ".model"
