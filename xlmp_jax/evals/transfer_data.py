"""The examples of the zero-shot transfer tasks: ``Example``, the file readers, TFDS, tiny derived tasks.

Data comes from TFDS (``xtreme_xnli``/``xnli``, ``xtreme_pawsx``/``paws_x_wiki``, ``wikiann``, ...) when
prepared in a ``data_dir``; otherwise from local files: a directory with ``train.tsv`` (English) and
``test-<lang>.tsv`` (``sentence1<TAB>[sentence2<TAB>]label``) for classification, ``train.conll`` and
``test-<lang>.conll`` (``token<TAB>tag`` lines, blank line between sentences) or ``train.conllu`` and
``test-<lang>.conllu`` (Universal Dependencies' CoNLL-U: words and their UPOS tags) for tagging.
``derived_*`` build tiny tasks from the shipped sample for smoke runs. Which source a sweep reads is
``transfer.finetune_data``; fine-tuning on the examples is ``finetune``.
"""

from __future__ import annotations

import dataclasses
import glob
import io
import os
import re
from collections.abc import Sequence
from typing import Any

import conllu
import numpy as np


@dataclasses.dataclass(frozen=True)
class Example:
    """A classification example (``texts`` = 1 or 2 sentences, ``label`` a name) or a tagging one
    (``texts`` = the words, ``tags`` one name per word)."""

    texts: tuple[str, ...]
    label: str = ""
    tags: tuple[str, ...] = ()


def read_classification_tsv(path: str, max_examples: int = 0) -> list[Example]:
    """``sentence1<TAB>[sentence2<TAB>]label`` lines; a bad line is an error naming file and line."""
    examples = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) not in (2, 3) or not all(x.strip() for x in fields):
                raise ValueError(
                    f"{path}:{number}: expected 'sentence1<TAB>[sentence2<TAB>]label' with non-empty fields, "
                    f"got {len(fields)} field(s): {line[:80]!r}"
                )
            examples.append(Example(texts=tuple(x.strip() for x in fields[:-1]), label=fields[-1].strip()))
            if max_examples and len(examples) >= max_examples:
                break
    if not examples:
        raise ValueError(f"classification file {path!r} holds no examples")
    return examples


def read_conll(path: str, max_examples: int = 0) -> list[Example]:
    """``token<TAB>tag`` (or whitespace-separated) lines, sentences separated by blank lines."""
    examples, words, tags = [], [], []

    def flush():
        if words:
            examples.append(Example(texts=tuple(words), tags=tuple(tags)))
            words.clear()
            tags.clear()

    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                flush()
                if max_examples and len(examples) >= max_examples:
                    break
                continue
            fields = line.split("\t") if "\t" in line else line.split()
            if len(fields) != 2 or not fields[0].strip() or not fields[1].strip():
                raise ValueError(f"{path}:{number}: expected 'token<TAB>tag', got {len(fields)} field(s): {line!r}")
            words.append(fields[0].strip())
            tags.append(fields[1].strip())
    flush()
    if not examples:
        raise ValueError(f"CoNLL file {path!r} holds no sentences")
    return examples[:max_examples] if max_examples else examples


def read_conllu(path: str, max_examples: int = 0) -> list[Example]:
    """Words and UPOS tags of a CoNLL-U file (the ``conllu`` package parses it).

    As XTREME's UD-POS (and TFDS's ``xtreme_pos``): multi-word token lines and empty nodes are skipped
    (their ids are ranges / decimals, the syntactic words carry the tags), and so is a word whose form or
    UPOS is ``_``; a sentence left with no word is dropped. A word line without CoNLL-U's 10 tab-separated
    fields is an error naming file:line (the parser itself would read it leniently).
    """
    with open(path, encoding="utf-8") as f:
        text = f.read()
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split("\t")
        if line.strip() and not line.startswith("#") and len(fields) != 10:
            raise ValueError(f"{path}:{number}: expected 10 tab-separated CoNLL-U fields, got {len(fields)}: {line!r}")
    examples = []
    try:
        for sentence in conllu.parse_incr(io.StringIO(text)):
            words = [t for t in sentence if isinstance(t["id"], int)]
            words = [t for t in words if t["form"] not in (None, "_") and t["upos"] not in (None, "_")]
            if words:
                examples.append(Example(tuple(t["form"] for t in words), tags=tuple(t["upos"] for t in words)))
            if max_examples and len(examples) >= max_examples:
                break
    except conllu.exceptions.ParseException as e:
        raise ValueError(f"{path}: not CoNLL-U ({e})") from None
    if not examples:
        raise ValueError(f"CoNLL-U file {path!r} holds no tagged sentences")
    return examples


def read_tagging(path: str, max_examples: int = 0) -> list[Example]:
    """A tagging file by its extension: ``.conllu`` (``read_conllu``), else ``token<TAB>tag`` (``read_conll``)."""
    reader = read_conllu if path.endswith(".conllu") else read_conll
    return reader(path, max_examples)


def local_files(directory: str, kind: str) -> tuple[str, dict[str, str]]:
    """(train file, {language: test file}) of a local task directory (tagging: ``.conllu`` if its
    ``train.conllu`` exists, else ``.conll``)."""
    ext = "tsv" if kind == "classification" else "conll"
    if kind != "classification" and os.path.isfile(os.path.join(directory, "train.conllu")):
        ext = "conllu"
    train = os.path.join(directory, f"train.{ext}")
    if not os.path.isfile(train):
        also = " or train.conllu" if ext == "conll" else ""
        raise FileNotFoundError(f"{kind} data directory {directory!r} has no train.{ext}{also}")
    tests = {}
    for path in sorted(glob.glob(os.path.join(directory, f"test-*.{ext}"))):
        tests[re.sub(rf"^test-(.*)\.{ext}$", r"\1", os.path.basename(path))] = path
    if not tests:
        raise FileNotFoundError(f"{kind} data directory {directory!r} has no test-<lang>.{ext} files")
    return train, tests


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def tfds_examples(
    name: str, split: str, language: str, data_dir: str, kind: str, max_examples: int = 0
) -> list[Example]:
    """Examples of one language from a prepared TFDS dataset.

    Handles per-language builder configs named ``<lang>`` (``xtreme_pawsx/de``, ``paws_x_wiki/en``,
    ``wikiann/fr``, ``universal_dependencies/de_gsd`` with language ``de_gsd``) or ``<name>_<lang>``
    (``xtreme_pos/xtreme_pos_de``), tags under ``tags`` or ``upos``, and multilingual ``Translation``
    features (``xnli``/``xtreme_xnli``: premise[lang], hypothesis per language).
    """
    import tensorflow_datasets as tfds  # TensorFlow: seconds to import, only for a TFDS source

    builder = tfds.builder(name, data_dir=data_dir or None)
    if builder.BUILDER_CONFIGS and "/" not in name:
        configs = {c.name for c in builder.BUILDER_CONFIGS}
        config = next((c for c in (language, f"{name}_{language}") if c in configs), None)
        if config is None:
            raise ValueError(f"TFDS {name!r} has no config for language {language!r} (e.g. {sorted(configs)[:5]})")
        builder = tfds.builder(f"{name}/{config}", data_dir=data_dir or None)
    full_name = builder.name + (f"/{builder.builder_config.name}" if builder.builder_config else "")
    try:
        dataset = builder.as_dataset(split=split)
    except AssertionError as e:  # TFDS asserts when the data was never prepared in data_dir
        raise FileNotFoundError(f"TFDS dataset {full_name!r} is not prepared in data_dir {data_dir!r} ({e})") from None
    info = builder.info.features
    examples = []
    for ex in tfds.as_numpy(dataset):
        if kind == "tagging":
            field = "tags" if "tags" in ex else "upos"
            names = info[field].feature.names
            examples.append(
                Example(texts=tuple(_text(t) for t in ex["tokens"]), tags=tuple(names[int(t)] for t in ex[field]))
            )
        elif "premise" in ex:  # multilingual XNLI-style record
            premise = _text(ex["premise"][language])
            hyp_langs = [_text(x) for x in ex["hypothesis"]["language"]]
            if language not in hyp_langs:
                continue
            hypothesis = _text(ex["hypothesis"]["translation"][hyp_langs.index(language)])
            examples.append(Example((premise, hypothesis), info["label"].names[int(ex["label"])]))
        else:
            texts = tuple(_text(ex[k]) for k in ("sentence1", "sentence2", "sentence") if k in ex)
            examples.append(Example(texts, info["label"].names[int(ex["label"])]))
        if max_examples and len(examples) >= max_examples:
            break
    if not examples:
        raise ValueError(f"TFDS dataset {name!r} split {split!r} has no examples for language {language!r}")
    return examples


# ------------------------------------------------------------------------------ tiny tasks from the sample


def derived_classification(sentences: Sequence[str], seed: int = 0) -> list[Example]:
    """Sentence pairs labelled ``same`` (second = the first with its words reversed) or ``different``
    (another sentence): a language-independent task for smoke-testing transfer."""
    rng = np.random.default_rng(seed)
    examples = []
    for i, sentence in enumerate(sentences):
        if i % 2 == 0:
            examples.append(Example((sentence, " ".join(reversed(sentence.split()))), "same"))
        else:
            other = sentences[(i + 1 + int(rng.integers(len(sentences) - 1))) % len(sentences)]
            examples.append(Example((sentence, other), "different"))
    return examples


def word_shape(word: str) -> str:
    """The deterministic tag rule of the derived tagging task."""
    if any(c.isdigit() for c in word):
        return "NUM"
    if all(not c.isalnum() for c in word):
        return "PUNCT"
    if word[0].isupper():
        return "CAP"
    return "LOW"


def derived_tagging(sentences: Sequence[str]) -> list[Example]:
    """Whitespace words tagged by ``word_shape`` (number / punctuation / capitalised / other)."""
    return [Example(tuple(s.split()), tags=tuple(word_shape(w) for w in s.split())) for s in sentences if s.split()]
