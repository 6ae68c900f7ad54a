"""Extractive-QA examples from SQuAD-format JSON files (XTREME's download layout) or TFDS.

Every source is SQuAD v1.1's shape: ``data`` -> articles -> ``paragraphs`` -> (``context``, ``qas`` ->
(``id``, ``question``, ``answers`` -> (``text``, ``answer_start``))). TFDS's ``squad/v1.1``, ``xquad/<lang>``,
``mlqa/<lang>`` and ``tydi_qa/goldp`` share one feature layout (``id``, ``title``, ``context``, ``question``,
``answers`` {``text``, ``answer_start``}). TyDiQA-GoldP's ``train`` split holds every language; XTREME trains on
its English part only, whose ids start with ``english-`` (``tydi_qa`` ids name the language first).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any


@dataclasses.dataclass(frozen=True)
class QAExample:
    """One question on one context; ``answers`` / ``starts``: the gold texts and their character offsets."""

    id: str
    question: str
    context: str
    answers: tuple[str, ...]
    starts: tuple[int, ...]


# XTREME's download folder (``scripts/download_data.sh``), relative paths per task
SQUAD_TRAIN = "squad/train-v1.1.json"
SQUAD_DEV = "squad/dev-v1.1.json"
TYDIQA_TRAIN = "tydiqa/tydiqa-goldp-v1.1-train/tydiqa.en.train.json"
TYDIQA_DEV = "tydiqa/tydiqa-goldp-v1.1-dev/tydiqa.goldp.{lang}.dev.json"
XQUAD_TEST = "xquad/xquad.{lang}.json"
MLQA_TEST = "mlqa/MLQA_V1/test/test-context-{lang}-question-{lang}.json"


def _field(record: dict, key: str, where: str, path: str) -> Any:
    if not isinstance(record, dict) or key not in record:
        raise ValueError(f"{path}: {where} has no {key!r} field")
    return record[key]


def read_squad_json(path: str, max_examples: int = 0) -> list[QAExample]:
    """Every question of a SQuAD-format file (at most ``max_examples``; 0 = all)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        document = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    examples = []
    for a, article in enumerate(_field(document, "data", "the file", path)):
        for p, paragraph in enumerate(_field(article, "paragraphs", f"data[{a}]", path)):
            where = f"data[{a}].paragraphs[{p}]"
            context = _field(paragraph, "context", where, path)
            for q, qa in enumerate(_field(paragraph, "qas", where, path)):
                at = f"{where}.qas[{q}]"
                answers = _field(qa, "answers", at, path)
                texts = tuple(str(_field(ans, "text", f"{at}.answers", path)) for ans in answers)
                starts = []
                for ans in answers:
                    start = _field(ans, "answer_start", f"{at}.answers", path)
                    if not isinstance(start, int) or start < 0:
                        raise ValueError(f"{path}: {at} (id {qa.get('id')!r}) has answer_start={start!r}")
                    starts.append(start)
                question = _field(qa, "question", at, path)
                examples.append(QAExample(str(_field(qa, "id", at, path)), question, context, texts, tuple(starts)))
                if max_examples and len(examples) >= max_examples:
                    return examples
    return examples


def local_file(directory: str, relative: str, name: str) -> str:
    """``directory/relative``, or a FileNotFoundError naming the task and the path expected."""
    path = os.path.join(directory, relative)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{name}: {path!r} does not exist (XTREME's download layout expected)")
    return path


def _decode(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def read_tfds(name: str, split: str, data_dir: str, max_examples: int = 0, id_prefix: str = "") -> list[QAExample]:
    """Examples of a prepared TFDS dataset (``squad/v1.1``, ``xquad/de``, ``mlqa/de``, ``tydi_qa/goldp``);
    ``id_prefix`` keeps only ids starting with it (``english-`` for TyDiQA's English training set)."""
    import tensorflow_datasets as tfds  # TensorFlow: seconds to import, only for a TFDS source

    dataset = tfds.load(name, split=split, data_dir=data_dir or None, shuffle_files=False)
    examples = []
    for record in tfds.as_numpy(dataset):
        qid = _decode(record["id"])
        if id_prefix and not qid.startswith(id_prefix):
            continue
        # text i pairs with answer_start i (a prepared dataset has as many of each; mock data need not)
        pairs = list(zip(record["answers"]["text"], record["answers"]["answer_start"], strict=False))
        texts, starts = tuple(_decode(t) for t, _ in pairs), tuple(int(s) for _, s in pairs)
        examples.append(QAExample(qid, _decode(record["question"]), _decode(record["context"]), texts, starts))
        if max_examples and len(examples) >= max_examples:
            break
    if not examples:
        which = f" with ids starting {id_prefix!r}" if id_prefix else ""
        raise ValueError(f"TFDS {name!r} split {split!r} has no examples{which}")
    return examples
