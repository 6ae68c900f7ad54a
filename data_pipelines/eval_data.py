"""Held-out batches from a data config, in the training batch format (data_pipelines/README.md).

The `validation` rows of the run's prepared shards (`dataset`), every selected language in turn, masked by the
same NumPy masking as training with masks fixed by the language and the row (blocks of `_EVAL_MASK_BLOCK` rows
of one language share one seeded generator), so a row's mask never depends on which other languages or how
many rows are evaluated. `BalancedEvalData` is the in-training eval set: every language of the mixture with the
same number of rows, read once into memory at the first eval.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import ml_collections
import numpy as np

from data_pipelines import dataset
from data_pipelines.batch_format import BATCH_KEYS, pad_rows, row_arrays
from data_pipelines.config import DataConfig
from data_pipelines.input_pipeline import NumpyMasker
from data_pipelines.vocab import XLMRVocabulary

_EVAL_SEED = 1234  # eval masks are fixed: the same positions every eval
_EVAL_MASK_BLOCK = 64  # eval rows are masked in blocks of this many rows of one language


class EvalData:
    """Finite, deterministic held-out batches (every selected language in turn); iterable again and again.

    The last batch is padded to `batch_size` with empty rows (`attention_mask` and `weights` all 0,
    `language` 0), so every batch has the same shape.
    """

    def __init__(
        self,
        data_config: DataConfig | ml_collections.ConfigDict,
        *,
        batch_size: int,
        split: str,
        languages: Sequence[str] | None,
        rows_per_language: int = 0,
        prepared: dataset.PreparedData | None = None,
        vocab: XLMRVocabulary | None = None,
    ):
        data_config = DataConfig.of(data_config)
        self.vocab = vocab or XLMRVocabulary(data_config.vocab_path)
        self.prepared = prepared or dataset.open_prepared(data_config, self.vocab._fingerprint)
        self.languages: list[str] = list(self.prepared.mixture.languages)
        self.seq_length = data_config.seq_length
        self.batch_size = batch_size
        wanted = list(languages) if languages is not None else self.languages
        unknown = [lang for lang in wanted if lang not in self.languages]
        if not wanted:
            raise ValueError(f"languages={languages!r} selects no language to evaluate")
        if unknown:
            raise ValueError(f"languages={unknown!r} not in this data config's languages {self.languages}")
        if split not in ("train", "validation"):
            raise ValueError(f"split={split!r}: expected 'train' or 'validation'")
        self._split, self._wanted, self._per = split, wanted, rows_per_language
        self._masker = NumpyMasker(data_config, self.vocab)

    def _language_rows(self, lang: str) -> Iterator[dict[str, np.ndarray]]:
        """`lang`'s rows, masked, in blocks of `_EVAL_MASK_BLOCK`."""
        lid = self.languages.index(lang)
        rows = self.prepared.rows(lang, self._split)
        n = min(len(rows), self._per) if self._per > 0 else len(rows)
        for block, start in enumerate(range(0, n, _EVAL_MASK_BLOCK)):
            stop = min(start + _EVAL_MASK_BLOCK, n)
            ids, positions, _ = row_arrays(rows.get(range(start, stop)), self.seq_length, self.vocab.pad_id)
            # masked as a whole block (pad rows after a short one): the generator's draws are shaped by the rows
            # it masks, so a row's mask must not depend on how many rows follow it in the block
            full = np.full((_EVAL_MASK_BLOCK, self.seq_length), self.vocab.pad_id, np.int32)
            full[: len(ids)] = ids
            masked = self._masker(full, np.random.default_rng([_EVAL_SEED, lid, block]))
            out = {k: v[: len(ids)] for k, v in masked.items()}
            out.update(
                attention_mask=(ids != self.vocab.pad_id).astype(np.int32),
                positions=positions,
                language=np.full(len(ids), lid, np.int32),
            )
            yield out

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        pending: list[dict[str, np.ndarray]] = []
        held = 0
        for lang in self._wanted:
            for block in self._language_rows(lang):
                pending.append(block)
                held += len(block["language"])
                while held >= self.batch_size:
                    merged = {k: np.concatenate([b[k] for b in pending]) for k in BATCH_KEYS}
                    yield {k: v[: self.batch_size] for k, v in merged.items()}
                    rest = {k: v[self.batch_size :] for k, v in merged.items()}
                    held -= self.batch_size
                    pending = [rest] if held else []
        if held:
            merged = {k: np.concatenate([b[k] for b in pending]) for k in BATCH_KEYS}
            yield pad_rows(merged, self.batch_size, self.vocab.pad_id)


def make_eval_data(
    data_config: DataConfig | ml_collections.ConfigDict,
    *,
    batch_size: int,
    split: str = "validation",
    languages: Sequence[str] | None = None,
    rows_per_language: int = 0,
) -> EvalData:
    """Held-out batches of `data_config`, same format as training (data_pipelines/README.md).

    `rows_per_language` > 0 keeps only the first that many rows of each language (all of them when a
    language has fewer); a row's mask is the same either way.
    """
    return EvalData(
        data_config, batch_size=batch_size, split=split, languages=languages, rows_per_language=rows_per_language
    )


def balanced_rows_per_language(num_batches: int, batch_size: int, num_languages: int) -> int:
    """Rows of each language in a balanced eval of `num_batches` batches: the budget split equally, at least
    one row each (every language is covered even past the budget); 0 (= all rows) when `num_batches` is 0."""
    if num_batches <= 0:
        return 0
    return max(1, num_batches * batch_size // num_languages)


class BalancedEvalData:
    """`make_balanced_eval_data`, read at the first iteration and kept in memory; iterable again and again."""

    def __init__(
        self,
        data_config: DataConfig,
        *,
        batch_size: int,
        num_batches: int,
        prepared: dataset.PreparedData | None = None,
    ):
        self._args = (data_config, batch_size, num_batches, prepared)
        self._batches: list[dict[str, np.ndarray]] | None = None

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        if self._batches is None:
            cfg, batch_size, num_batches, prepared = self._args
            self._batches = make_balanced_eval_data(
                cfg, batch_size=batch_size, num_batches=num_batches, prepared=prepared
            )
        return iter(self._batches)


def make_balanced_eval_data(
    data_config: DataConfig | ml_collections.ConfigDict,
    *,
    batch_size: int,
    num_batches: int,
    prepared: dataset.PreparedData | None = None,
) -> list[dict[str, np.ndarray]]:
    """The in-training eval set: every language of the mixture (MLM languages and TLM pairs) with the same
    number of held-out rows (fewer only where a language has fewer), read once into memory so each eval
    costs just the forward passes. Per-language losses, and their mean, then weigh every language alike."""
    data = EvalData(data_config, batch_size=batch_size, split="validation", languages=None, prepared=prepared)
    data._per = balanced_rows_per_language(num_batches, batch_size, len(data.languages))
    return list(data)
