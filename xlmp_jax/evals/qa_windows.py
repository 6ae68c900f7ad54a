"""Question + context into fixed-length windows, and span logits back into characters of the context.

A context is split at whitespace and each word encoded on its own; its pieces are matched against the
word's characters (``id_to_piece`` without SentencePiece's "▁"), so every context token carries the
character range it came from. A piece that does not match (``<unk>``, or characters that SentencePiece's
NFKC normalisation rewrote, e.g. the ligature "ﬁ") spans up to where the next piece matches. A tokenizer
with no ``id_to_piece`` gives every piece its whole word.

Windows follow XLM-R's pair layout ``<s> question </s></s> context-slice </s>``: the question cut to
``max_query_length`` tokens, context slices of what is left of ``max_length``, each starting ``doc_stride``
tokens after the last. A token seen by several windows is scored only in the one where it has the most
context on both sides (the "max context" rule of the SQuAD reference code). Training labels are the answer's
first and last token in a window that holds the whole answer, else (0, 0): the ``<s>`` position.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import numpy as np

from xlmp_jax.evals.qa_data import QAExample
from xlmp_jax.hf.encoder import Tokenizer

SPACE_MARK = "\u2581"  # SentencePiece's word-start mark


def align(tokenizer: Tokenizer, text: str) -> tuple[list[int], list[int], list[int]]:
    """(ids, character starts, character ends) of ``text``'s tokens; ``text[start:end]`` is each token's text."""
    piece_of = getattr(tokenizer, "id_to_piece", None)
    ids: list[int] = []
    starts: list[int] = []
    ends: list[int] = []
    for word in re.finditer(r"\S+", text):
        chars, base = word.group(), word.start()
        word_ids = tokenizer.encode(chars)
        if piece_of is None:
            starts += [base] * len(word_ids)
            ends += [base + len(chars)] * len(word_ids)
        else:
            for start, end in _piece_spans(chars, [piece_of(i).replace(SPACE_MARK, "") for i in word_ids]):
                starts.append(base + start)
                ends.append(base + end)
        ids += word_ids
    return ids, starts, ends


def _piece_spans(word: str, pieces: Sequence[str]) -> list[tuple[int, int]]:
    """Character range of each piece in ``word``: matched left to right; a piece that does not match spans
    up to where the next piece is found (or the end of the word)."""
    spans, cursor = [], 0
    for k, piece in enumerate(pieces):
        if word.startswith(piece, cursor):
            stop = cursor + len(piece)
        else:
            following = pieces[k + 1] if k + 1 < len(pieces) else ""
            stop = word.find(following, cursor + 1) if following else -1
            stop = stop if stop > cursor else len(word)
        spans.append((cursor, stop))
        cursor = stop
    return spans


@dataclasses.dataclass(frozen=True)
class Window:
    """One row of the model: ``example`` (index into the examples), ``ids``, per position the context
    character range (``char_start`` / ``char_end``, -1 outside the context), ``max_context`` (this window
    scores that token) and the training ``label`` (start, end positions)."""

    example: int
    ids: list[int]
    char_start: np.ndarray
    char_end: np.ndarray
    max_context: np.ndarray
    label: tuple[int, int]


def answer_tokens(starts: Sequence[int], ends: Sequence[int], first: int, last: int) -> tuple[int, int] | None:
    """First and last token overlapping characters [first, last); None if no token does."""
    hit = [t for t, (s, e) in enumerate(zip(starts, ends, strict=True)) if e > first and s < last]
    return (hit[0], hit[-1]) if hit else None


def slice_starts(length: int, budget: int, doc_stride: int) -> list[int]:
    """Token offsets of the context slices: every ``doc_stride`` until one reaches the end."""
    offsets = [0]
    while offsets[-1] + budget < length:
        offsets.append(offsets[-1] + min(budget, doc_stride))
    return offsets


def make_windows(
    examples: Sequence[QAExample],
    tokenizer: Tokenizer,
    max_length: int,
    doc_stride: int,
    max_query_length: int,
    training: bool = False,
) -> tuple[list[Window], int]:
    """The windows of every example, and (``training``) how many examples were skipped because their first
    answer is not at its ``answer_start`` in the context, or covers no token."""
    if doc_stride < 1:
        raise ValueError(f"doc_stride={doc_stride} must be at least 1")
    aligned: dict[str, tuple[list[int], list[int], list[int]]] = {}
    out: list[Window] = []
    skipped = 0
    for n, ex in enumerate(examples):
        if ex.context not in aligned:
            aligned[ex.context] = align(tokenizer, ex.context)
        ids, starts, ends = aligned[ex.context]
        answer = None
        if training:
            first = ex.starts[0] if ex.starts else -1
            if first < 0 or ex.context[first : first + len(ex.answers[0])] != ex.answers[0]:
                skipped += 1
                continue
            answer = answer_tokens(starts, ends, first, first + len(ex.answers[0]))
            if answer is None:
                skipped += 1
                continue
        question = tokenizer.encode(ex.question)[:max_query_length]
        budget = max_length - len(question) - 4
        if budget < 1:
            raise ValueError(
                f"max_length={max_length} leaves no room for context after a {len(question)}-token question "
                f"(max_query_length={max_query_length})"
            )
        offsets = slice_starts(len(ids), budget, doc_stride)
        head = [tokenizer.bos_id, *question, tokenizer.eos_id, tokenizer.eos_id]
        best = _max_context_owner(len(ids), offsets, budget)
        starts_arr, ends_arr = np.asarray(starts, np.int64), np.asarray(ends, np.int64)
        for w, offset in enumerate(offsets):
            stop = min(offset + budget, len(ids))
            row = head + ids[offset:stop] + [tokenizer.eos_id]
            inside = slice(len(head), len(head) + stop - offset)
            char_start = np.full(len(row), -1, np.int64)
            char_end = np.full(len(row), -1, np.int64)
            owner = np.zeros(len(row), bool)
            char_start[inside], char_end[inside] = starts_arr[offset:stop], ends_arr[offset:stop]
            owner[inside] = best[offset:stop] == w
            label = (0, 0)
            if answer is not None and offset <= answer[0] and answer[1] < offset + budget:
                label = (len(head) + answer[0] - offset, len(head) + answer[1] - offset)
            out.append(Window(n, row, char_start, char_end, owner, label))
    return out, skipped


def _max_context_owner(length: int, offsets: Sequence[int], budget: int) -> np.ndarray:
    """Per context token, the window where min(tokens left, tokens right) + 0.01 * slice length is largest
    (the first such window on a tie)."""
    owner, best = np.zeros(length, np.int64), np.full(length, -1.0)
    for w, offset in enumerate(offsets):
        size = min(budget, length - offset)
        t = np.arange(offset, offset + size)
        value = np.minimum(t - offset, offset + size - 1 - t) + 0.01 * size
        better = value > best[t]
        owner[t[better]], best[t[better]] = w, value[better]
    return owner


def best_answers(
    examples: Sequence[QAExample],
    windows: Sequence[Window],
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    max_answer_length: int,
) -> list[str]:
    """Per example, the context text of the highest-scoring span (start + end logit) over its windows: the
    start a max-context token, end >= start, at most ``max_answer_length`` tokens; '' if none."""
    best: list[tuple[float, str]] = [(-np.inf, "")] * len(examples)
    for w, window in enumerate(windows):
        context = np.flatnonzero(window.char_start >= 0)
        if not len(context):
            continue
        lo, hi = context[0], context[-1] + 1
        start = np.asarray(start_logits[w][lo:hi], np.float64)
        end = np.asarray(end_logits[w][lo:hi], np.float64)
        start = np.where(window.max_context[lo:hi], start, -np.inf)
        for k in range(min(max_answer_length, hi - lo)):
            scores = start[: hi - lo - k] + end[k:]
            i = int(np.argmax(scores))
            if scores[i] > best[window.example][0]:
                ctx = examples[window.example].context
                text = ctx[window.char_start[lo + i] : window.char_end[lo + i + k]].strip()
                best[window.example] = (float(scores[i]), text)
    return [text for _, text in best]
