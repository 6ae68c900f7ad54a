"""Unsupervised cross-lingual sentence retrieval, as XTREME's Tatoeba task.

Each sentence is embedded by mean-pooling one layer's hidden states over its non-pad tokens (XTREME uses
a middle layer); every English sentence retrieves the other-language sentence of highest cosine
similarity and vice versa; top-1 accuracy is reported in both directions.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from xlmp_jax.hf.encoder import Encoder, Tokenizer

Row = tuple[str, str, float]


def read_pairs(path: str, max_pairs: int = 0) -> tuple[list[str], list[str]]:
    """Reads a TSV of ``english<TAB>other`` lines; a line without exactly two non-empty fields is an error."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"parallel TSV {path!r} does not exist")
    first, second = [], []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            line = line.rstrip("\n").rstrip("\r")
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) != 2 or not fields[0].strip() or not fields[1].strip():
                raise ValueError(
                    f"{path}:{number}: expected 'english<TAB>other' (2 non-empty fields), got {len(fields)} "
                    f"field(s): {line[:80]!r}"
                )
            first.append(fields[0].strip())
            second.append(fields[1].strip())
            if max_pairs and len(first) >= max_pairs:
                break
    if not first:
        raise ValueError(f"parallel TSV {path!r} holds no sentence pairs")
    return first, second


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[len(a), len(b)] cosine similarities."""
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return a @ b.T


def top1_accuracy(source: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """(source->target, target->source) top-1 accuracy when row i of each side is the other's i-th row."""
    if source.shape != target.shape:
        raise ValueError(f"retrieval needs aligned embeddings, got shapes {source.shape} and {target.shape}")
    sim = cosine_matrix(source, target)
    gold = np.arange(len(source))
    return float((sim.argmax(axis=1) == gold).mean()), float((sim.argmax(axis=0) == gold).mean())


def retrieval_eval(
    encoder: Encoder,
    tokenizer: Tokenizer,
    pairs_by_language: Mapping[str, tuple[Sequence[str], Sequence[str]]],
    layer: int | str = "middle",
) -> list[Row]:
    """Rows (xx, acc_en_to_xx | acc_xx_to_en | acc_mean | pairs, value) per language paired with English."""
    rows: list[Row] = []
    for lang, (english, other) in pairs_by_language.items():
        en = encoder.embed_texts(tokenizer, english, layer)["embedding"]
        xx = encoder.embed_texts(tokenizer, other, layer)["embedding"]
        en_to_xx, xx_to_en = top1_accuracy(en, xx)
        rows += [
            (lang, "acc_en_to_xx", en_to_xx),
            (lang, "acc_xx_to_en", xx_to_en),
            (lang, "acc_mean", (en_to_xx + xx_to_en) / 2),
            (lang, "pairs", float(len(english))),
        ]
    if rows:
        means = [v for _, m, v in rows if m == "acc_mean"]
        rows.append(("all", "acc_mean", float(np.mean(means))))
    return rows
