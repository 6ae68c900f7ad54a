"""This process's share of the training input when it feeds several input shards (``train.data_shards``)."""

from __future__ import annotations

import jax
import numpy as np

from data_pipelines.config import DataConfig


class ShardCountError(ValueError):
    """``train.data_shards`` does not fit the process count or the batch."""


class ShardedTrainData:
    """This process's share of the input: ``train.data_shards / process_count`` shards, rows concatenated.

    By default there is one shard per process (then this is just that process's ``TrainData``). More
    shards than processes let one process feed exactly the global batches of a multi-host run, e.g. a
    single-host rehearsal of a 2-host job; its checkpoints' input state is interchangeable with theirs.
    """

    def __init__(self, data_config: DataConfig, *, global_batch_size: int, num_shards: int, seed: int):
        from data_pipelines import dataset
        from data_pipelines.input_pipeline import make_train_data
        from data_pipelines.vocab import XLMRVocabulary

        pc, pi = jax.process_count(), jax.process_index()
        num_shards = num_shards or pc
        if num_shards % pc or global_batch_size % num_shards:
            raise ShardCountError(
                f"train.data_shards={num_shards} must be a multiple of the process count {pc} and divide "
                f"train.batch_size={global_batch_size}"
            )
        per = num_shards // pc
        vocab = XLMRVocabulary(data_config.vocab_path)
        # process 0 prepares the rows where they are not prepared yet; the other processes wait for them
        prepared = dataset.open_prepared(data_config, vocab._fingerprint, process_index=pi)
        self.shards = [
            make_train_data(
                data_config,
                global_batch_size=global_batch_size,
                process_index=pi * per + j,
                process_count=num_shards,
                seed=seed,
                prepared=prepared,
                vocab=vocab,
            )
            for j in range(per)
        ]
        self.prepared = prepared
        self.languages = list(self.shards[0].languages)
        self.vocab = self.shards[0].vocab
        self.seq_length = self.shards[0].seq_length

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batches = [next(shard) for shard in self.shards]
        if len(batches) == 1:
            return batches[0]
        return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}

    def save(self, directory: str) -> None:
        for shard in self.shards:
            shard.save(directory)

    def restore(self, directory: str) -> None:
        for shard in self.shards:
            shard.restore(directory)

    def skip_to(self, batch_index: int) -> None:
        """Continues every shard at batch `batch_index` without a saved position (its counters restart at 0)."""
        for shard in self.shards:
            shard.skip_to(batch_index)
