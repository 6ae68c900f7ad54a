"""Held-out batches from a data config, in the training batch format (data_pipelines/README.md).

SeqIO tasks through tf.data: finite and deterministic (every selected language in turn, masks fixed by the
language and the row), built when first needed. `BalancedEvalData` is the in-training eval set: every language
of the mixture with the same number of rows, read once into memory at the first eval.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import ml_collections
import numpy as np
import seqio
import tensorflow as tf

from data_pipelines import preprocessors as prep
from data_pipelines import tasks
from data_pipelines.batch_format import BATCH_KEYS, pad_rows
from data_pipelines.config import DataConfig, max_predictions
from data_pipelines.vocab import XLMRVocabulary

_EVAL_SEED = 1234  # eval masks are fixed: the same positions every eval
_EVAL_MASK_BLOCK = 64  # eval rows are masked in blocks of this many rows of one language


def _masker(cfg: DataConfig, vocab: XLMRVocabulary, base_seed: tf.Tensor):
    """(batch index, batch of rows) -> the masked batch features (plus the stat_* counters), vectorised."""
    word_starts = prep.word_start_table(vocab) if cfg.whole_word_masking else None
    specials = (vocab.bos_id, vocab.pad_id, vocab.eos_id, vocab.mask_id)
    k_max = max_predictions(cfg.seq_length, cfg.mlm_rate)

    def fn(index, ex):
        seed = tf.random.experimental.stateless_fold_in(base_seed, index)  # a fresh mask every batch
        masked = prep.mask_tokens(
            ex["input_ids"],
            seed,
            vocab_size=vocab.vocab_size,
            mask_id=vocab.mask_id,
            special_ids=specials,
            mlm_rate=cfg.mlm_rate,
            max_predictions=k_max,
            mask_prob=cfg.mask_prob,
            random_prob=cfg.random_prob,
            word_starts=word_starts,
        )
        out = {
            "input_ids": masked["input_ids"],
            "attention_mask": tf.cast(tf.not_equal(ex["input_ids"], vocab.pad_id), tf.int32),
            "positions": ex["positions"],
            "targets": masked["targets"],
            "weights": masked["weights"],
            "language": ex["language"],
        }
        out.update({k: ex[k] for k in prep.STAT_KEYS})
        return out

    return fn


def _base_seed(seed: int, process_index: int) -> tf.Tensor:
    return tf.constant([seed, process_index], tf.int64)


def _options() -> tf.data.Options:
    opts = tf.data.Options()
    opts.deterministic = True  # same seed -> same batches, whatever the thread timing
    opts.autotune.enabled = True
    return opts


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
    ):
        data_config = DataConfig.of(data_config)
        self.spec = tasks.mixture_spec(data_config)
        self.languages: list[str] = list(self.spec.languages)
        self.vocab = self.spec.vocab
        self.seq_length = data_config.seq_length
        self.batch_size = batch_size
        wanted = list(languages) if languages is not None else self.languages
        unknown = [lang for lang in wanted if lang not in self.languages]
        if not wanted:
            raise ValueError(f"languages={languages!r} selects no language to evaluate")
        if unknown:
            raise ValueError(f"languages={unknown!r} not in this data config's languages {self.languages}")
        datasets = []
        for lang in wanted:
            lid = self.languages.index(lang)
            task = seqio.get_mixture_or_task(self.spec.task_names[lid])
            ds = task.get_dataset(
                sequence_length=None,
                split=split,
                shuffle=False,
                num_epochs=1,
                trim_output_features=False,
                try_in_mem_cache=False,
            )
            # Masks depend on the language and row only, not on which other languages are evaluated.
            masker = _masker(data_config, self.vocab, _base_seed(_EVAL_SEED, lid))
            ds = ds.batch(_EVAL_MASK_BLOCK).enumerate().map(masker, num_parallel_calls=tf.data.AUTOTUNE)
            ds = ds.unbatch()
            datasets.append(ds.take(rows_per_language) if rows_per_language > 0 else ds)
        ds = datasets[0]
        for d in datasets[1:]:
            ds = ds.concatenate(d)
        self.dataset = ds.batch(batch_size).prefetch(tf.data.AUTOTUNE).with_options(_options())

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for tf_batch in self.dataset:
            yield pad_rows({k: tf_batch[k].numpy() for k in BATCH_KEYS}, self.batch_size, self.vocab.pad_id)


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
    """`make_balanced_eval_data`, read at the first iteration (so start-up does not wait for the SeqIO/tf.data
    eval graphs) and kept in memory; iterable again and again. Not read in a background thread: a TF graph
    still being built in a daemon thread when a preempted run exits aborts the process."""

    def __init__(self, data_config: DataConfig | ml_collections.ConfigDict, *, batch_size: int, num_batches: int):
        self._args = (DataConfig.of(data_config), batch_size, num_batches)
        self._batches: list[dict[str, np.ndarray]] | None = None

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        if self._batches is None:
            cfg, batch_size, num_batches = self._args
            self._batches = make_balanced_eval_data(cfg, batch_size=batch_size, num_batches=num_batches)
        return iter(self._batches)


def make_balanced_eval_data(
    data_config: DataConfig | ml_collections.ConfigDict, *, batch_size: int, num_batches: int
) -> list[dict[str, np.ndarray]]:
    """The in-training eval set: every language of the mixture (MLM languages and TLM pairs) with the same
    number of held-out rows (fewer only where a language has fewer), read once into memory so each eval
    costs just the forward passes. Per-language losses, and their mean, then weigh every language alike."""
    data_config = DataConfig.of(data_config)
    num_languages = len(tasks.mixture_spec(data_config).languages)
    per = balanced_rows_per_language(num_batches, batch_size, num_languages)
    return list(make_eval_data(data_config, batch_size=batch_size, rows_per_language=per))
