"""Unsupervised cross-lingual sentence retrieval, as XTREME's Tatoeba task.

Each sentence is embedded by mean-pooling one layer's hidden states over its non-pad tokens (XTREME uses
a middle layer); every English sentence retrieves the other-language sentence of highest cosine
similarity and vice versa; top-1 accuracy is reported in both directions.

The sweep's ``retrieval`` eval: ``run`` with the settings block ``config()``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import ml_collections
import numpy as np

from data_pipelines import sample
from xlmp_jax.evals.context import EvalContext, Row, split_list
from xlmp_jax.evals.heldout import transfer_dev_languages, transfer_dev_pairs
from xlmp_jax.hf.encoder import Encoder, Tokenizer

NAME = "retrieval"


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


def config() -> ml_collections.ConfigDict:
    """The sweep config's ``retrieval`` block."""
    return ml_collections.ConfigDict(
        dict(
            layer="middle",  # hidden-state index: middle (num_layers // 2, as XTREME) | last | 0..num_layers
            # heldout (the sample's held-out pairs, or tsv / tsv_dir) | transfer_dev (the transfer task's English
            # dev strings and their translations: dev pairs, disjoint from every sentence a report reads)
            pairs="heldout",
            tsv_dir="",  # folder of en-<lang>.tsv files ('' = the shipped sample's parallel/ folder)
            tsv="",  # one TSV file instead (its language from the name en-<lang>.tsv, else 'xx')
            languages="",  # '' = every en-<lang>.tsv found
            max_pairs=1000,  # per language; 0 = all (XTREME's Tatoeba uses 1000)
        )
    )


PAIRS = ("heldout", "transfer_dev")


def check(block: ml_collections.ConfigDict, name: str) -> None:
    """Refuses an unknown ``pairs`` before the sweep reads any checkpoint."""
    if block.get("pairs", "heldout") not in PAIRS:
        raise ValueError(f"{name}.pairs={block.pairs!r} is not one of {PAIRS}")
    if block.get("pairs", "heldout") == "transfer_dev" and (block.get("tsv") or block.get("tsv_dir")):
        raise ValueError(f"{name}.pairs='transfer_dev' reads the shipped sample; {name}.tsv / tsv_dir must be ''")


def retrieval_pairs(settings: ml_collections.ConfigDict) -> dict[str, tuple[list[str], list[str]]]:
    """{language: (english, other)} from one TSV, a folder of en-<lang>.tsv, the shipped sample's held-out
    pairs (``sample.read_parallel(lang, "validation")``: never in any training split) or, with
    ``pairs='transfer_dev'``, the transfer task's dev pairs (``heldout.transfer_dev_pairs``). Your own TSVs must
    be kept out of training by you (e.g. with ``sample.normalize`` against your corpus)."""
    check(settings, "retrieval")
    if settings.get("pairs", "heldout") == "transfer_dev":
        languages = split_list(settings.languages) or [x for x in transfer_dev_languages() if x != "en"]
        return transfer_dev_pairs(languages, settings.max_pairs)
    if settings.tsv:
        name = os.path.basename(settings.tsv)
        lang = name[3:].split(".")[0] if name.startswith("en-") else "xx"
        return {lang: read_pairs(settings.tsv, settings.max_pairs)}
    if settings.tsv_dir:
        if not os.path.isdir(settings.tsv_dir):
            raise FileNotFoundError(f"retrieval.tsv_dir {settings.tsv_dir!r} is not a directory")
        found = {f[3:-4]: os.path.join(settings.tsv_dir, f) for f in os.listdir(settings.tsv_dir)}
        found = {k: v for k, v in found.items() if os.path.basename(v).startswith("en-") and v.endswith(".tsv")}
    else:
        return _sample_retrieval_pairs(split_list(settings.languages), settings.max_pairs)
    languages = split_list(settings.languages) or sorted(found)
    missing = [lang for lang in languages if lang not in found]
    if missing:
        raise ValueError(f"no parallel TSV en-{missing[0]}.tsv (have: {sorted(found)})")
    return {lang: read_pairs(found[lang], settings.max_pairs) for lang in languages}


def _sample_retrieval_pairs(languages: list[str], max_pairs: int) -> dict[str, tuple[list[str], list[str]]]:
    have = sample.parallel_languages()
    missing = [lang for lang in languages if lang not in have]
    if missing:
        raise ValueError(f"no parallel TSV en-{missing[0]}.tsv (have: {have})")
    out = {}
    for lang in languages or have:
        pairs = sample.read_parallel(lang, "validation")[: max_pairs or None]
        out[lang] = ([en.strip() for en, _ in pairs], [other.strip() for _, other in pairs])
    return out


def run(ctx: EvalContext, cfg: ml_collections.ConfigDict) -> list[Row]:
    """Retrieval rows of one checkpoint on the configured pairs."""
    pairs = retrieval_pairs(cfg)  # a bad TSV fails before anything is computed
    return retrieval_eval(ctx.encoder, ctx.tokenizer, pairs, cfg.layer)
