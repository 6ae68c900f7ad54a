"""The sweep's ``bucc`` eval: BUCC 2018 bitext mining from the shared task's own files.

Per language pair ``<xx>-en`` and split, the task gives ``<xx>-en.<split>.<xx>`` and ``<xx>-en.<split>.en``
(``id<TAB>sentence`` lines) and ``<xx>-en.<split>.gold`` (``xx_id<TAB>en_id`` lines). Every sentence of both
sides is embedded (mean-pooled hidden states, ``layer``), candidates are mined over all of them with the ratio
margin (``mining``), the score threshold is chosen where F1 peaks on the ``sample`` split's gold and F1 is
reported on the other split (``training``: the split with public gold; XTREME's download renames sample ->
dev and training -> test). TFDS's ``bucc`` builder yields only the gold pairs, which would make mining
trivial, so only the files are read.

Sentences are mined as unique texts (XTREME does the same); a text that appears under several ids of one
side maps to none of them, as in XTREME's evaluation.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import ml_collections
import numpy as np

from xlmp_jax.evals import mining
from xlmp_jax.evals.context import EvalContext, Row, split_list
from xlmp_jax.hf.encoder import Encoder, Tokenizer

NAME = "bucc"
LANGUAGES = ("de", "fr", "ru", "zh")  # BUCC 2018's four pairs, each with English


def config() -> ml_collections.ConfigDict:
    """The sweep config's ``bucc`` block."""
    return ml_collections.ConfigDict(
        dict(
            dir="",  # folder of <xx>-en.<split>.{<xx>,en,gold} files (or of <xx>-en/ folders holding them)
            languages="de,fr,ru,zh",  # '' = every pair found in dir
            sample_split="sample",  # the threshold is chosen on this split's gold (XTREME's renaming: dev)
            test_split="training",  # F1 is reported on this split (XTREME's renaming: test)
            k=4,  # nearest neighbours of the margin (Artetxe & Schwenk's k=4)
            mode="max",  # candidates: forward | backward | intersection | max (XTREME's default)
            layer="xtreme",  # hidden state mean-pooled: xtreme (8 of 12, 14 of 24) | middle | last | 0..L
        )
    )


def split_files(directory: str, language: str, split: str) -> dict[str, str]:
    """{'source', 'english', 'gold'} paths of one pair's split, in ``directory`` or ``directory/<xx>-en/``."""
    stem = f"{language}-en.{split}"
    for folder in (directory, os.path.join(directory, f"{language}-en")):
        paths = {
            "source": os.path.join(folder, f"{stem}.{language}"),
            "english": os.path.join(folder, f"{stem}.en"),
            "gold": os.path.join(folder, f"{stem}.gold"),
        }
        if os.path.isfile(paths["source"]):
            missing = [p for p in paths.values() if not os.path.isfile(p)]
            if missing:
                raise FileNotFoundError(f"BUCC {stem}: {missing[0]!r} does not exist")
            return paths
    raise FileNotFoundError(f"BUCC {stem}: no {stem}.{language} in {directory!r} or its {language}-en/ folder")


def _two_columns(path: str, layout: str):
    """(line number, first, second) of each non-empty ``a<TAB>b`` line; a malformed line names file:line."""
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) != 2 or not fields[0].strip() or not fields[1].strip():
                raise ValueError(f"{path}:{number}: expected '{layout}', got {len(fields)} field(s): {line[:80]!r}")
            yield number, fields[0].strip(), fields[1].strip()


def read_sentences(path: str) -> tuple[list[str], list[str]]:
    """(ids, sentences) of an ``id<TAB>sentence`` file; a malformed line or a repeated id names file:line."""
    ids, sentences, seen = [], [], set()
    for number, sid, sentence in _two_columns(path, "id<TAB>sentence"):
        if sid in seen:
            raise ValueError(f"{path}:{number}: id {sid!r} appears twice")
        seen.add(sid)
        ids.append(sid)
        sentences.append(sentence)
    if not ids:
        raise ValueError(f"BUCC sentence file {path!r} holds no sentences")
    return ids, sentences


def read_gold(path: str, source_ids: Sequence[str], english_ids: Sequence[str]) -> set[tuple[str, str]]:
    """The ``xx_id<TAB>en_id`` pairs; a malformed line or an id absent from its sentence file names file:line."""
    known_source, known_english = set(source_ids), set(english_ids)
    gold = set()
    for number, source, english in _two_columns(path, "xx_id<TAB>en_id"):
        for sid, known, side in ((source, known_source, "source"), (english, known_english, "English")):
            if sid not in known:
                raise ValueError(f"{path}:{number}: id {sid!r} is not in the {side} sentence file")
        gold.add((source, english))
    if not gold:
        raise ValueError(f"BUCC gold file {path!r} holds no pairs")
    return gold


def unique_texts(ids: Sequence[str], sentences: Sequence[str]) -> tuple[list[str], list[str | None]]:
    """(unique sentences in first-seen order, the id of each: None where the text has several ids)."""
    owner: dict[str, str | None] = {}
    for sid, text in zip(ids, sentences, strict=True):
        owner[text] = None if text in owner else sid
    return list(owner), list(owner.values())


def mined_pairs(
    source_emb: np.ndarray,
    english_emb: np.ndarray,
    source_ids: Sequence[str | None],
    english_ids: Sequence[str | None],
    k: int,
    mode: str,
) -> dict[tuple[str, str], float]:
    """{(xx id, en id): score} of the mined candidates whose both texts have a single id."""
    pairs = {}
    for (i, j), score in mining.mine(source_emb, english_emb, k, mode).items():
        if source_ids[i] is not None and english_ids[j] is not None:
            pairs[(source_ids[i], english_ids[j])] = score
    return pairs


def split_candidates(
    encoder: Encoder, tokenizer: Tokenizer, paths: dict[str, str], settings: ml_collections.ConfigDict
) -> tuple[dict[tuple[str, str], float], set[tuple[str, str]]]:
    """(mined candidates, gold pairs) of one split's files."""
    source_ids, source = read_sentences(paths["source"])
    english_ids, english = read_sentences(paths["english"])
    gold = read_gold(paths["gold"], source_ids, english_ids)  # a bad gold file fails before any embedding
    source, source_owner = unique_texts(source_ids, source)
    english, english_owner = unique_texts(english_ids, english)
    source_emb = encoder.embed_texts(tokenizer, source, settings.layer)["embedding"]
    english_emb = encoder.embed_texts(tokenizer, english, settings.layer)["embedding"]
    return mined_pairs(source_emb, english_emb, source_owner, english_owner, settings.k, settings.mode), gold


def languages_found(directory: str, split: str) -> list[str]:
    """The ``xx`` of every ``<xx>-en.<split>.<xx>`` file in ``directory`` or its ``<xx>-en/`` folders."""
    found = set()
    for root in [directory, *(os.path.join(directory, d) for d in os.listdir(directory))]:
        if os.path.isdir(root):
            for name in os.listdir(root):
                parts = name.split(".")
                if len(parts) == 3 and parts[0].endswith("-en") and parts[1] == split and parts[2] == parts[0][:-3]:
                    found.add(parts[2])
    return sorted(found)


def bucc_eval(
    encoder: Encoder, tokenizer: Tokenizer, settings: ml_collections.ConfigDict, languages: Sequence[str]
) -> list[Row]:
    """Rows per pair: f1 / precision / recall on the test split at the sample split's threshold, that
    ``threshold``, ``f1_sample`` (F1 there), ``f1_own_threshold`` (the test split's own best cut: what
    XTREME's script prints, as it optimises on the gold it evaluates) and counts; an ``all`` mean F1."""
    if settings.mode not in mining.MODES:
        raise ValueError(f"bucc.mode={settings.mode!r} is not one of {mining.MODES}")
    files = {
        lang: (
            split_files(settings.dir, lang, settings.sample_split),
            split_files(settings.dir, lang, settings.test_split),
        )
        for lang in languages
    }  # every file is found before anything is embedded
    rows: list[Row] = []
    for lang, (sample_paths, test_paths) in files.items():
        sample_candidates, sample_gold = split_candidates(encoder, tokenizer, sample_paths, settings)
        threshold, f1_sample = mining.best_threshold(sample_candidates, sample_gold)
        test_candidates, test_gold = split_candidates(encoder, tokenizer, test_paths, settings)
        precision, recall, f1 = mining.prf(test_candidates, test_gold, threshold)
        rows += [
            (lang, "f1", f1),
            (lang, "precision", precision),
            (lang, "recall", recall),
            (lang, "threshold", threshold),
            (lang, "f1_sample", f1_sample),
            (lang, "f1_own_threshold", mining.best_threshold(test_candidates, test_gold)[1]),
            (lang, "gold_pairs", float(len(test_gold))),
            (lang, "candidates", float(len(test_candidates))),
        ]
    if rows:
        rows.append(("all", "f1", float(np.mean([v for _, m, v in rows if m == "f1"]))))
    return rows


def run(ctx: EvalContext, cfg: ml_collections.ConfigDict) -> list[Row]:
    """BUCC rows of one checkpoint on the configured pairs."""
    if not cfg.dir:
        raise ValueError("bucc.dir is not set: the folder of the BUCC 2018 files (README: Evaluation)")
    if not os.path.isdir(cfg.dir):
        raise FileNotFoundError(f"bucc.dir {cfg.dir!r} is not a directory")
    languages = split_list(cfg.languages) or languages_found(cfg.dir, cfg.sample_split)
    if not languages:
        raise FileNotFoundError(f"bucc.dir {cfg.dir!r} holds no <xx>-en.{cfg.sample_split}.<xx> file")
    return bucc_eval(ctx.encoder, ctx.tokenizer, cfg, languages)
