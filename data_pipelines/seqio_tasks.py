"""The prepared rows as SeqIO Tasks and a Mixture, for pipelines built on SeqIO (t5x-style feature converters).

`register(cfg)` registers one Task per language entry of the run's prepared data (`dataset.open_prepared`),
yielding its rows unmasked (`input_ids` with `<s>`/`</s>`, `positions`, `language`; splits `train` and
`validation`), and a Mixture over them at the run's temperature rates; it returns the mixture's name. Names
carry the mixture's identity, so registering the same data again is a no-op and two datasets never clash.

Not used by training or evaluation, which read the shards directly (no TensorFlow); this is the bridge for
users who want SeqIO's preprocessors and feature converters on the same rows.
"""

from __future__ import annotations

import numpy as np
import seqio
import tensorflow as tf

from data_pipelines import dataset
from data_pipelines.config import DataConfig
from data_pipelines.vocab import XLMRVocabulary


def _dataset_fn(prepared: dataset.PreparedData, entry: str, lid: int, pad_id: int):
    def fn(split: str, shuffle_files: bool, seed: int | None = None) -> tf.data.Dataset:
        del shuffle_files, seed  # rows in stream order; SeqIO shuffles downstream when asked
        rows = prepared.rows(entry, split)

        def gen():
            for start in range(0, len(rows), 1024):
                for ids, restart, _ in rows.get(range(start, min(start + 1024, len(rows)))):
                    j = np.arange(len(ids))
                    positions = np.where(j < restart, j, j - restart) + pad_id + 1
                    yield {"input_ids": ids, "positions": positions.astype(np.int32), "language": np.int32(lid)}

        spec = {
            "input_ids": tf.TensorSpec([None], tf.int32),
            "positions": tf.TensorSpec([None], tf.int32),
            "language": tf.TensorSpec([], tf.int32),
        }
        return tf.data.Dataset.from_generator(gen, output_signature=spec)

    return fn


def register(cfg: DataConfig) -> str:
    """Registers the prepared data of `cfg` as SeqIO Tasks and a Mixture (idempotent); returns the mixture name."""
    vocab = XLMRVocabulary(cfg.vocab_path)
    prepared = dataset.open_prepared(cfg, vocab._fingerprint)
    mixture = prepared.mixture
    name = f"xlmp_{mixture.name.replace('-', '_')}"
    if name in seqio.MixtureRegistry.names():
        return name
    ids = seqio.PassThroughVocabulary(vocab.vocab_size, eos_id=vocab.eos_id)
    features = {
        "input_ids": seqio.Feature(ids, add_eos=False, dtype=tf.int32),
        "positions": seqio.Feature(ids, add_eos=False, dtype=tf.int32),
        "language": seqio.Feature(ids, add_eos=False, dtype=tf.int32, rank=0),
    }
    tasks = []
    for lid, entry in enumerate(mixture.languages):
        task = f"{name}_{entry.replace('-', '_')}"
        if task not in seqio.TaskRegistry.names():
            counts = {s: prepared.splits[entry, s].rows for s in ("train", "validation")}
            source = seqio.FunctionDataSource(
                _dataset_fn(prepared, entry, lid, vocab.pad_id), splits=tuple(counts), num_input_examples=counts
            )
            seqio.TaskRegistry.add(task, source=source, output_features=features)
        tasks.append((task, mixture.rates[entry]))
    seqio.MixtureRegistry.add(name, tasks)
    return name
