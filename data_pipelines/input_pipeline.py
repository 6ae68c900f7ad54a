"""Training and evaluation batches from a data config (format in data_pipelines/README.md).

Train: the config's SeqIO Mixture (temperature-sampled languages, each host reading its own shard) ->
per-host batches -> BERT/XLM-R masking, vectorised per batch, with a stateless seed fold_in((seed, process),
batch index) -> prefetch. Everything is TensorFlow ops, so the iterator position (shuffle buffers, sampler
state, read offsets) is saved exactly with `tf.train.Checkpoint(iterator=...)`; a resumed job continues with
the next unseen batch without replaying the stream.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence

import numpy as np
import seqio
import tensorflow as tf

from data_pipelines import preprocessors as prep
from data_pipelines import tasks
from data_pipelines.config import max_predictions, validate_data_config
from data_pipelines.vocab import XLMRVocabulary

BATCH_KEYS = ("input_ids", "attention_mask", "positions", "targets", "weights", "language")
_EVAL_SEED = 1234  # eval masks are fixed: the same positions every eval
_EVAL_MASK_BLOCK = 64  # eval rows are masked in blocks of this many rows of one language


def _masker(cfg, vocab: XLMRVocabulary, base_seed: tf.Tensor):
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


class TrainData:
    """Endless per-host training batches (dicts of NumPy arrays, see README); `save`/`restore` the position."""

    def __init__(self, data_config, *, global_batch_size: int, process_index: int, process_count: int, seed: int):
        validate_data_config(data_config)
        if global_batch_size % process_count:
            raise ValueError(f"global_batch_size={global_batch_size} is not divisible by process_count={process_count}")
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index={process_index} is outside [0, process_count={process_count})")
        self.config = data_config
        self.spec = tasks.mixture_spec(data_config)
        self.languages: list[str] = list(self.spec.languages)
        self.vocab: XLMRVocabulary = self.spec.vocab
        self.seq_length: int = data_config.seq_length
        self.batch_size = global_batch_size // process_count
        self.process_index, self.process_count, self.seed = process_index, process_count, seed
        self.batches_seen = 0
        self.stats = dict.fromkeys(prep.STAT_KEYS, 0)  # summed over the batches handed out
        self.dataset = self._build()
        self._iterator = iter(self.dataset)

    def _build(self) -> tf.data.Dataset:
        cfg = self.config
        mixture = seqio.get_mixture_or_task(self.spec.name)
        ds = mixture.get_dataset(
            sequence_length=None,
            split="train",
            shuffle=cfg.shuffle_buffer > 0,
            seed=self.seed,
            shard_info=seqio.ShardInfo(index=self.process_index, num_shards=self.process_count),
            num_epochs=None,
            trim_output_features=False,
            try_in_mem_cache=False,
            log_mixing_proportions=False,
        )
        ds = ds.batch(self.batch_size, drop_remainder=True, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        masker = _masker(cfg, self.vocab, _base_seed(self.seed, self.process_index))
        ds = ds.enumerate().map(masker, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
        return ds.with_options(_options())

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batch = {k: v.numpy() for k, v in next(self._iterator).items()}
        for k in prep.STAT_KEYS:
            self.stats[k] += int(batch.pop(k).sum())
        self.batches_seen += 1
        return batch

    # ----- iterator position -----------------------------------------------------------------------------------
    def _prefix(self, directory: str) -> str:
        return os.path.join(directory, f"input_pipeline-{self.process_index:05d}-of-{self.process_count:05d}")

    def _meta(self) -> dict:
        return {
            "mixture": self.spec.name,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "process_index": self.process_index,
            "process_count": self.process_count,
            "batches_seen": self.batches_seen,
            "stats": self.stats,
        }

    def save(self, directory: str) -> None:
        """Writes this host's iterator state (tf.data checkpoint) and a small JSON of counters to `directory`."""
        tf.io.gfile.makedirs(directory)
        path = tf.train.Checkpoint(iterator=self._iterator).write(self._prefix(directory))
        meta = dict(self._meta(), checkpoint=os.path.basename(path))
        with tf.io.gfile.GFile(self._prefix(directory) + ".json", "w") as f:
            json.dump(meta, f)

    def restore(self, directory: str) -> None:
        """Continues from the position saved in `directory` by a TrainData of the same config/seed/sharding."""
        meta_path = self._prefix(directory) + ".json"
        if not tf.io.gfile.exists(meta_path):
            raise FileNotFoundError(f"no input-pipeline state for process {self.process_index} in {directory!r}")
        with tf.io.gfile.GFile(meta_path) as f:
            meta = json.load(f)
        mine = self._meta()
        for key in ("mixture", "seed", "batch_size", "process_count"):
            if meta[key] != mine[key]:
                raise ValueError(
                    f"input-pipeline state in {directory!r} has {key}={meta[key]!r}, this pipeline {mine[key]!r}"
                )
        tf.train.Checkpoint(iterator=self._iterator).read(os.path.join(directory, meta["checkpoint"])).assert_consumed()
        self.batches_seen = meta["batches_seen"]
        self.stats = dict(meta["stats"])


def make_train_data(
    data_config, *, global_batch_size: int, process_index: int = 0, process_count: int = 1, seed: int = 0
) -> TrainData:
    """Per-host training batches of `data_config` (format in data_pipelines/README.md)."""
    return TrainData(
        data_config,
        global_batch_size=global_batch_size,
        process_index=process_index,
        process_count=process_count,
        seed=seed,
    )


class EvalData:
    """Finite, deterministic held-out batches (every selected language in turn); iterable again and again.

    The last batch is padded to `batch_size` with empty rows (`attention_mask` and `weights` all 0,
    `language` 0), so every batch has the same shape.
    """

    def __init__(
        self,
        data_config,
        *,
        batch_size: int,
        split: str,
        languages: Sequence[str] | None,
        rows_per_language: int = 0,
    ):
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
            batch = {k: tf_batch[k].numpy() for k in BATCH_KEYS}
            n = batch["input_ids"].shape[0]
            if n < self.batch_size:
                batch = {
                    k: _pad_rows(v, self.batch_size, self.vocab.pad_id if k == "input_ids" else 0)
                    for k, v in batch.items()
                }
                batch["positions"][n:] = self.vocab.pad_id
            yield batch


def _pad_rows(x: np.ndarray, rows: int, value) -> np.ndarray:
    pad = np.full((rows - x.shape[0], *x.shape[1:]), value, dtype=x.dtype)
    return np.concatenate([x, pad], 0)


def make_eval_data(
    data_config,
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


def make_balanced_eval_data(data_config, *, batch_size: int, num_batches: int) -> list[dict[str, np.ndarray]]:
    """The in-training eval set: every language of the mixture (MLM languages and TLM pairs) with the same
    number of held-out rows (fewer only where a language has fewer), read once into memory so each eval
    costs just the forward passes. Per-language losses, and their mean, then weigh every language alike."""
    num_languages = len(tasks.mixture_spec(data_config).languages)
    per = balanced_rows_per_language(num_batches, batch_size, num_languages)
    return list(make_eval_data(data_config, batch_size=batch_size, rows_per_language=per))
