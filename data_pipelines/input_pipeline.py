"""Training batches from a data config (format in data_pipelines/README.md); eval batches: `eval_data`.

Train (grain, index-based): each language's train rows are read by index from the run's prepared ArrayRecord
shards (`dataset`: prepared once, by `python -m data_pipelines.prepare` or by the run itself); a stateless index map (`mixing`) says which language and which row every example of this host
is (temperature rates, a fresh row order every epoch, per-host row ranges); a grain `MapDataset` over batch
indices gathers the rows and masks them in NumPy with a seed of (seed, process, batch index), and grain's
iterator prefetches in threads. The input position is therefore one integer: `save` writes a small JSON
(whatever the number of languages) and a resumed job continues with the next unseen batch, bit for bit.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import grain
import ml_collections
import numpy as np
from etils import epath

from data_pipelines import dataset, masking, mixing
from data_pipelines.batch_format import max_predictions
from data_pipelines.config import DataConfig
from data_pipelines.packing import STAT_KEYS
from data_pipelines.shards import batch_arrays
from data_pipelines.vocab import XLMRVocabulary

STATE_FORMAT = "xlmp-grain-index-2"  # 1: rows of the per-host token cache (same order, other mixture names)
_ENDLESS = 2**62  # batch indices of the endless grain MapDataset
_PREFETCH_THREADS, _PREFETCH_BATCHES = 2, 8


class LegacyDataStateError(ValueError):
    """The input state was written by an older input pipeline (tf.data's shuffle buffers, or the per-host token
    cache): it cannot be continued."""


class TrainData:
    """Endless per-host training batches (dicts of NumPy arrays, see README); `save`/`restore` the position."""

    def __init__(
        self,
        data_config: DataConfig | ml_collections.ConfigDict,
        *,
        global_batch_size: int,
        process_index: int,
        process_count: int,
        seed: int,
        prepared: dataset.PreparedData | None = None,
        vocab: XLMRVocabulary | None = None,
    ):
        data_config = DataConfig.of(data_config)
        if global_batch_size % process_count:
            raise ValueError(f"global_batch_size={global_batch_size} is not divisible by process_count={process_count}")
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index={process_index} is outside [0, process_count={process_count})")
        if seed < 0:
            raise ValueError(f"seed={seed}: expected an int >= 0")
        self.config = data_config
        self.vocab: XLMRVocabulary = vocab or XLMRVocabulary(data_config.vocab_path)
        self.prepared = prepared or dataset.open_prepared(data_config, self.vocab._fingerprint)
        self.spec = self.prepared.mixture
        self.languages: list[str] = list(self.spec.languages)
        self.seq_length: int = data_config.seq_length
        self.batch_size = global_batch_size // process_count
        self.process_index, self.process_count, self.seed = process_index, process_count, seed
        self.batches_seen = 0
        self.stats = dict.fromkeys(STAT_KEYS, 0)  # summed over the batches handed out
        self._rows = self.prepared.all_rows("train")  # one source: a batch is one batched read
        lo, hi = [], []
        for lang, split in zip(self.languages, self._rows.splits, strict=True):  # this host's share of its rows
            n = split.rows
            a, b = n * process_index // process_count, n * (process_index + 1) // process_count
            if a == b:
                raise ValueError(
                    f"data.languages entry {lang!r} has {n} training rows, fewer than process_count="
                    f"{process_count}: host {process_index} would get none"
                )
            lo.append(a)
            hi.append(b)
        self._lo, self._n = np.array(lo, np.int64), np.array(hi, np.int64) - np.array(lo, np.int64)
        self._schedule = mixing.Schedule(np.array([self.spec.rates[x] for x in self.languages]), seed)
        self._masker = NumpyMasker(data_config, self.vocab)
        self.dataset = grain.MapDataset.range(_ENDLESS).map(self.batch)
        read = grain.ReadOptions(num_threads=_PREFETCH_THREADS, prefetch_buffer_size=_PREFETCH_BATCHES)
        self._iterator = iter(self.dataset.to_iter_dataset(read))

    def locate(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(language id, row) of each example of batch `index` of this host."""
        lang, k = self._schedule.lookup(int(index) * self.batch_size, self.batch_size)
        n = self._n[lang]
        epoch, pos = k // n, k % n
        if self.config.shuffle_buffer > 0:  # a fresh order of each language's rows every epoch
            pairs, group = np.unique(np.stack([lang, epoch], 1), axis=0, return_inverse=True)
            keys = [(self.seed, self.process_index, int(a), int(e)) for a, e in pairs]
            pos = mixing.permute_groups(pos, group, [int(self._n[a]) for a, _ in pairs], keys)
        return lang, self._lo[lang] + pos

    def batch(self, index: int) -> dict[str, np.ndarray]:
        """Batch `index` of this host (a pure function of the index: what makes resuming exact)."""
        lang, row = self.locate(index)
        records = self._rows.records(self._rows.starts[lang] + row)
        ids, positions, stats = batch_arrays(records, self.seq_length, self.vocab.pad_id)
        rng = np.random.default_rng([self.seed, self.process_index, int(index)])
        out = self._masker(ids, rng)
        out.update(
            attention_mask=(ids != self.vocab.pad_id).astype(np.int32),
            positions=positions,
            language=lang.astype(np.int32),
        )
        out.update({key: np.int64(v) for key, v in zip(STAT_KEYS, stats, strict=True)})
        return out

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batch = dict(next(self._iterator))
        for k in STAT_KEYS:
            self.stats[k] += int(batch.pop(k))
        self.batches_seen += 1
        return batch

    # ----- iterator position -----------------------------------------------------------------------------------
    def _path(self, directory: str) -> str:
        name = f"input_pipeline-{self.process_index:05d}-of-{self.process_count:05d}.json"
        return os.path.join(directory, name)

    def _meta(self) -> dict:
        return {
            "format": STATE_FORMAT,
            "mixture": self.spec.name,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "process_index": self.process_index,
            "process_count": self.process_count,
            "batches_seen": self.batches_seen,
            "stats": self.stats,
        }

    def get_state(self) -> dict:
        """This host's whole input position (a few hundred bytes as JSON, whatever the number of languages)."""
        return dict(self._meta(), iterator={"next_index": self.batches_seen})

    def save(self, directory: str) -> None:
        """Writes this host's input position (`get_state`) as one small JSON file in `directory`."""
        epath.Path(directory).mkdir(parents=True, exist_ok=True)
        tmp = epath.Path(self._path(directory) + ".tmp")
        tmp.write_text(json.dumps(self.get_state()))
        tmp.replace(self._path(directory))

    def restore(self, directory: str) -> None:
        """Continues from the position saved in `directory` by a TrainData of the same config/seed/sharding."""
        path = self._path(directory)
        if not epath.Path(path).exists():
            raise FileNotFoundError(f"no input-pipeline state for process {self.process_index} in {directory!r}")
        meta = json.loads(epath.Path(path).read_text())
        if meta.get("format") != STATE_FORMAT:
            raise LegacyDataStateError(
                f"input state written by an older input pipeline (format {meta.get('format', 'tf.data')!r}, not "
                f"{STATE_FORMAT!r}) cannot be continued: {path}. The model state can still be restored: "
                "config.train.restore_data=False resumes the weights and continues the input at that step"
            )
        mine = self._meta()
        for key in ("mixture", "seed", "batch_size", "process_count"):
            if meta[key] != mine[key]:
                raise ValueError(
                    f"input-pipeline state in {directory!r} has {key}={meta[key]!r}, this pipeline {mine[key]!r}"
                )
        self._iterator.set_state(meta["iterator"])
        self.batches_seen = meta["batches_seen"]
        self.stats = dict(meta["stats"])

    def skip_to(self, batch_index: int) -> None:
        """Continues at batch `batch_index` (O(1): batches are a function of their index); counters restart."""
        if batch_index < 0:
            raise ValueError(f"batch_index={batch_index}: expected >= 0")
        self._iterator.set_state({"next_index": int(batch_index)})
        self.batches_seen = int(batch_index)
        self.stats = dict.fromkeys(STAT_KEYS, 0)


class NumpyMasker:
    """rows [b, T] + a per-batch rng -> input_ids/targets/weights (the config's masking recipe)."""

    def __init__(self, cfg: DataConfig, vocab: XLMRVocabulary):
        self.word_starts = masking.word_start_table(vocab) if cfg.whole_word_masking else None
        self.kw = dict(
            vocab_size=vocab.vocab_size,
            mask_id=vocab.mask_id,
            special_ids=(vocab.bos_id, vocab.pad_id, vocab.eos_id, vocab.mask_id),
            mlm_rate=cfg.mlm_rate,
            max_predictions=max_predictions(cfg.seq_length, cfg.mlm_rate),
            mask_prob=cfg.mask_prob,
            random_prob=cfg.random_prob,
        )

    def __call__(self, ids: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return masking.mask_tokens(ids, rng, word_starts=self.word_starts, **self.kw)


def make_train_data(
    data_config: DataConfig | ml_collections.ConfigDict,
    *,
    global_batch_size: int,
    process_index: int = 0,
    process_count: int = 1,
    seed: int = 0,
    prepared: dataset.PreparedData | None = None,
    vocab: XLMRVocabulary | None = None,
) -> TrainData:
    """Per-host training batches of `data_config` (format in data_pipelines/README.md); `prepared` (with its
    `vocab`): the run's opened prepared data, else opened (and prepared first if absent) here."""
    return TrainData(
        data_config,
        global_batch_size=global_batch_size,
        process_index=process_index,
        process_count=process_count,
        seed=seed,
        prepared=prepared,
        vocab=vocab,
    )
