"""The SeqIO view of prepared data: a Task per language entry yields exactly its prepared rows, and the Mixture
mixes them at the run's temperature rates."""

import numpy as np
import pytest

from data_pipelines import dataset
from data_pipelines.config import DataConfig, default_data_config
from data_pipelines.vocab import XLMRVocabulary


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    c = default_data_config()
    c.languages, c.seq_length, c.tlm_rate = ("en", "de", "ja"), 64, 0.2
    c.parallel_languages = ("de",)
    c.prepared_dir = str(tmp_path_factory.mktemp("prepared"))
    return DataConfig.from_section(c)


def test_tasks_yield_the_prepared_rows_and_the_mixture_has_the_rates(cfg):
    seqio = pytest.importorskip("seqio")
    from data_pipelines import seqio_tasks

    name = seqio_tasks.register(cfg)
    assert seqio_tasks.register(cfg) == name  # idempotent
    prepared = dataset.open_prepared(cfg, XLMRVocabulary(cfg.vocab_path)._fingerprint)
    mixture = seqio.get_mixture_or_task(name)
    rates = {t.name: mixture.get_rate(t) for t in mixture.tasks}
    want = {f"{name}_{e.replace('-', '_')}": r for e, r in prepared.mixture.rates.items()}
    assert rates == pytest.approx(want) and len(want) == 4
    for lid, entry in enumerate(prepared.mixture.languages):
        task = seqio.get_mixture_or_task(f"{name}_{entry.replace('-', '_')}")
        for split in ("train", "validation"):
            got = list(task.get_dataset(None, split=split, shuffle=False).as_numpy_iterator())
            want = prepared.rows(entry, split).get(range(len(prepared.rows(entry, split))))
            assert len(got) == len(want) > 0
            for g, (ids, restart, _) in zip(got, want, strict=True):
                np.testing.assert_array_equal(g["input_ids"], ids)
                assert g["language"] == lid and g["positions"][0] == 2
                assert (restart == len(ids)) == (entry != "en-de")
                np.testing.assert_array_equal(g["positions"][restart:], np.arange(len(ids) - restart) + 2)
