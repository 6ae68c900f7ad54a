"""The grain training pipeline over prepared rows: the stateless index maps, NumPy masking, O(1) input state,
exact resume mid-epoch, temperature rates, refused legacy state, content errors, TFDS array_record input.

(That the prepared rows equal the rows of the per-host token cache this pipeline read before is
tests/test_golden_rows.py's job.)"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
from test_data_fixtures import make_corpus, train_spm

from data_pipelines import masking, mixing, packing
from data_pipelines.batch_format import BATCH_KEYS, max_predictions
from data_pipelines.config import DataConfig, default_data_config
from data_pipelines.input_pipeline import LegacyDataStateError, make_train_data
from data_pipelines.vocab import XLMRVocabulary


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("corpus"))
    lines = make_corpus(root)
    model = train_spm(root, str(tmp_path_factory.mktemp("spm") / "m"))
    return root, lines, model, str(tmp_path_factory.mktemp("cache"))


def text_config(corpus, **overrides):
    """The corpus as a text source; rows prepared once per distinct input/seq_length/packing into the module's
    tmp folder."""
    cfg = default_data_config()
    cfg.source, cfg.path, cfg.vocab_path = "text", corpus[0], corpus[2]
    cfg.seq_length, cfg.shuffle_buffer = 32, 64
    cfg.decompress_dir = corpus[3]
    cfg.update(overrides)
    return cfg


def test_permute_is_a_keyed_permutation():
    for n in (1, 2, 7, 1000, 4097):
        p = mixing.permute(np.arange(n), n, 3, 1)
        assert sorted(p.tolist()) == list(range(n))
    a, b = mixing.permute(np.arange(1000), 1000, 3, 1), mixing.permute(np.arange(1000), 1000, 3, 2)
    assert (a != b).mean() > 0.9 and (a != np.arange(1000)).mean() > 0.9
    np.testing.assert_array_equal(mixing.permute(np.arange(10, 20), 1000, 3, 1), a[10:20])  # random access


def test_schedule_is_random_access_and_follows_the_rates():
    rng = np.random.default_rng(0)
    rates = rng.pareto(1.0, size=50) + 0.01
    rates /= rates.sum()
    sched = mixing.Schedule(rates, seed=5)
    lang, k = sched.lookup(0, 20_000)
    for start, size in ((0, 7), (13, 100), (19_990, 10), (5_000, 1)):  # any window = the same examples
        la, ka = sched.lookup(start, size)
        np.testing.assert_array_equal(la, lang[start : start + size])
        np.testing.assert_array_equal(ka, k[start : start + size])
    for lid in range(50):  # each language's examples are numbered 0, 1, 2, ... in order
        np.testing.assert_array_equal(k[lang == lid], np.arange((lang == lid).sum()))
    counts = np.bincount(lang, minlength=50)
    for n in (20_000, 3_333, 77):  # deterministic: within 1 + rate * L of rate * n on every prefix
        c = np.bincount(lang[:n], minlength=50)
        assert (np.abs(c - rates * n) <= 1.0 + rates * 50 + 1e-9).all(), np.abs(c - rates * n).max()
    assert counts.sum() == 20_000


def test_numpy_masking_recipe(corpus):
    vocab = XLMRVocabulary(corpus[2])
    rng = np.random.default_rng(0)
    t = 128
    rows = np.full((300, t), vocab.pad_id, np.int32)
    lengths = rng.integers(5, t, size=300)
    for i, n in enumerate(lengths):
        rows[i, 0], rows[i, n - 1] = vocab.bos_id, vocab.eos_id
        rows[i, 1 : n - 1] = rng.integers(3, vocab.vocab_size - 1, size=n - 2)
    kw = dict(
        vocab_size=vocab.vocab_size,
        mask_id=vocab.mask_id,
        special_ids=(0, 1, 2, vocab.mask_id),
        mlm_rate=0.15,
        max_predictions=max_predictions(t, 0.15),
    )
    out = masking.mask_tokens(rows, np.random.default_rng(1), **kw)
    sel = out["weights"] > 0
    assert not (sel & np.isin(rows, [0, 1, 2])).any()
    for i, n in enumerate(lengths):
        assert sel[i].sum() == min(max_predictions(t, 0.15), max(1, round((n - 2) * 0.15)))
    np.testing.assert_array_equal(out["targets"], np.where(sel, rows, 0))
    np.testing.assert_array_equal(out["input_ids"][~sel], rows[~sel])
    total = sel.sum()
    masked = (out["input_ids"][sel] == vocab.mask_id).mean()
    kept = (out["input_ids"][sel] == rows[sel]).mean()
    for frac, p in ((masked, 0.8), (1 - masked - kept, 0.1 * (1 - 1 / vocab.vocab_size)), (kept, 0.1)):
        assert abs(frac - p) < 4 * math.sqrt(p * (1 - p) / total), (frac, p)
    replaced = out["input_ids"][sel & (out["input_ids"] != rows) & (out["input_ids"] != vocab.mask_id)]
    assert replaced.min() >= 4 and replaced.max() <= vocab.vocab_size - 2
    # whole words: a selected non-start piece has its predecessor selected
    starts = masking.word_start_table(vocab)
    ww = masking.mask_tokens(rows, np.random.default_rng(1), word_starts=starts, **kw)["weights"] > 0
    k = np.minimum(max_predictions(t, 0.15), np.maximum(1, np.round((lengths - 2) * np.float32(0.15))))
    assert (ww.sum(1) <= k).all() and ww.sum() > 0.5 * k.sum()
    inner = ~starts[rows[:, 1:]] & ~np.isin(rows[:, 1:], [0, 1, 2])  # a piece inside a word ...
    np.testing.assert_array_equal(ww[:, 1:][inner], ww[:, :-1][inner])  # ... is selected iff its predecessor is


def _synthetic_languages(root, n):
    os.makedirs(root, exist_ok=True)
    for i in range(n):
        with open(os.path.join(root, f"l{i:03d}.txt"), "w", encoding="utf-8") as f:
            f.write("".join(f"the dog {i} {j} runs home\n" for j in range(10 + 3 * (i % 5))))


def test_state_size_does_not_grow_with_languages(corpus, tmp_path):
    sizes = {}
    for n in (3, 50):
        root = str(tmp_path / f"langs{n}")
        _synthetic_languages(root, n)
        cfg = text_config(corpus, path=root, seq_length=16)
        data = make_train_data(cfg, global_batch_size=8, seed=1)
        for _ in range(3):
            next(data)
        data.save(str(tmp_path / f"state{n}"))
        files = os.listdir(tmp_path / f"state{n}")
        sizes[n] = sum(os.path.getsize(tmp_path / f"state{n}" / f) for f in files)
        assert len(files) == 1
    assert abs(sizes[50] - sizes[3]) < 300 and sizes[50] < 1_000_000, sizes


def test_exact_resume_across_epochs_and_hosts(corpus, tmp_path):
    cfg = text_config(corpus)
    for host in (0, 1):
        run = make_train_data(cfg, global_batch_size=16, seed=4, process_index=host, process_count=2)
        for _ in range(5):
            next(run)
        run.save(str(tmp_path / "it"))
        expected = [next(run) for _ in range(40)]  # well past one epoch of the smallest language
        resumed = make_train_data(cfg, global_batch_size=16, seed=4, process_index=host, process_count=2)
        resumed.restore(str(tmp_path / "it"))
        for want in expected:
            got = next(resumed)
            for k in BATCH_KEYS:
                np.testing.assert_array_equal(got[k], want[k])
        assert resumed.stats == run.stats and resumed.batches_seen == run.batches_seen == 45
    # the two hosts read disjoint rows: no row of host 0's first epoch of 'ru' is among host 1's
    a = make_train_data(cfg, global_batch_size=16, seed=4, process_index=0, process_count=2)
    b = make_train_data(cfg, global_batch_size=16, seed=4, process_index=1, process_count=2)
    assert a._lo[2] + a._n[2] == b._lo[2] and b._lo[2] + b._n[2] == a._rows.splits[2].rows


def test_rows_of_an_epoch_are_each_seen_once(corpus):
    cfg = text_config(corpus)
    data = make_train_data(cfg, global_batch_size=32, seed=2, process_index=1, process_count=2)
    ru = data.languages.index("ru")
    lo, n = int(data._lo[ru]), int(data._n[ru])
    rows, index = [], 0
    while len(rows) < 3 * n:
        lang, row = data.locate(index)
        rows += row[lang == ru].tolist()
        index += 1
    epochs = [rows[e * n : (e + 1) * n] for e in range(3)]
    for epoch in epochs:  # every row of this host's share once per epoch
        assert sorted(epoch) == list(range(lo, lo + n))
    assert epochs[0] != epochs[1] != epochs[2]  # in a new order each epoch


def test_language_frequencies_match_the_rates(corpus):
    sizes = {"en": 100_000.0, "fr": 3_000.0, "ru": 20.0}
    cfg = text_config(corpus, alpha=0.3)
    cfg.sizes.update(sizes)
    data = make_train_data(cfg, global_batch_size=250, seed=3)
    langs = np.concatenate([next(data)["language"] for _ in range(16)])
    z = sum(s**0.3 for s in sizes.values())
    for i, lang in enumerate(data.languages):
        p = sizes[lang] ** 0.3 / z
        assert abs(np.mean(langs == i) - p) < 4 * math.sqrt(p * (1 - p) / langs.size), lang


def test_old_tfdata_state_is_refused_by_name(corpus, tmp_path):
    cfg = text_config(corpus)
    data = make_train_data(cfg, global_batch_size=4, seed=0)
    d = tmp_path / "old"
    d.mkdir()
    old = {k: v for k, v in data._meta().items() if k != "format"}
    old["checkpoint"] = "input_pipeline-00000-of-00001-1"  # the tf.train.Checkpoint prefix it used to write
    (d / "input_pipeline-00000-of-00001.json").write_text(json.dumps(old))
    with pytest.raises(LegacyDataStateError, match=r"older input pipeline \(format 'tf\.data'.*restore_data=False"):
        data.restore(str(d))


def test_undecodable_line_names_file_and_line(corpus, tmp_path):
    root = tmp_path / "bad"
    root.mkdir()
    with open(root / "en.txt", "wb") as f:
        for i in range(40):
            f.write(f"the dog {i} runs\n".encode())
            if i == 20:
                f.write(b"bad \xff\xfe bytes\n")
    cfg = text_config(corpus, path=str(root))
    with pytest.raises(packing.ContentError, match=r"en\.txt:22: not valid UTF-8"):
        make_train_data(cfg, global_batch_size=4)


def test_tfds_array_record_is_read_through_a_data_source(corpus, tmp_path, monkeypatch):
    """mC4 stand-in prepared as array_record: the rows come through `tfds.data_source`, in split order."""
    import tensorflow as tf
    import tensorflow_datasets as tfds

    docs = [f"doc {i} " + " ".join(["word"] * (i % 7 + 1)) + f"\nline two {i}" for i in range(30)]
    feats = tfds.features.FeaturesDict({"text": tfds.features.Text()})

    def split(part):
        return tf.data.Dataset.from_tensor_slices({"text": part})

    d = str(tmp_path / "tfds")
    tfds.dataset_builders.store_as_tfds_dataset(
        name="c4", version="3.1.0", config="multilingual", features=feats, data_dir=d, file_format="array_record",
        split_datasets={"en": split(docs), "en-validation": split(docs[:3])},
    )  # fmt: skip
    cfg = text_config(corpus, source="mc4", path="", tfds_data_dir=d, languages=("en",), packing="none")
    cfg.seq_length = 128
    calls = []
    real = tfds.data_source
    monkeypatch.setattr(tfds, "data_source", lambda *a, **k: calls.append(a) or real(*a, **k))
    data = make_train_data(cfg, global_batch_size=4)  # prepared in-process: the DirectRunner calls the patched one
    assert calls, "the array_record split was not read through tfds.data_source"
    rows = data.prepared.rows("en", "train")
    # packing "none", rows longer than any line: a row per line (TFDS shuffled the documents when it stored
    # them, so compare the documents, each a pair of rows)
    want = sorted([[0, *data.vocab.encode(line), 2] for line in doc.split("\n")] for doc in docs)
    got = [ids.tolist() for ids, _, _ in rows.get(range(len(rows)))]
    assert len(got) == 60 and sorted(got[i : i + 2] for i in range(0, 60, 2)) == want
    assert data.prepared.mixture.sizes == {"en": 30.0}  # documents


def test_balanced_eval_data_is_read_at_first_use_once(monkeypatch):
    from data_pipelines import eval_data

    calls = []
    fake = [{"input_ids": np.zeros((2, 4), np.int32)}]
    monkeypatch.setattr(eval_data, "make_balanced_eval_data", lambda *a, **k: calls.append(k) or fake)
    ev = eval_data.BalancedEvalData(DataConfig.of(default_data_config()), batch_size=2, num_batches=3)
    assert calls == []  # nothing read at start-up
    assert list(ev) == fake and list(ev) == fake
    assert calls == [{"batch_size": 2, "num_batches": 3, "prepared": None}]


def test_masking_selects_what_a_stable_sort_selects_ties_included():
    """`masking._k_smallest` (one partition) picks each row's k smallest scores, the lower position first on a tie:
    exactly the first k of a stable argsort (what the masking used before, so masks did not change)."""
    from data_pipelines.masking import _k_smallest

    rng = np.random.default_rng(0)
    for trial in range(300):
        b, t = int(rng.integers(1, 20)), int(rng.integers(1, 60))
        scores = rng.integers(0, 4, (b, t)).astype(float) if trial % 2 else rng.random((b, t))  # odd: many ties
        k = rng.integers(0, t + 1, (b, 1))
        want = np.zeros((b, t), bool)
        np.put_along_axis(want, np.argsort(scores, axis=-1, kind="stable"), np.arange(t) < k, axis=-1)
        np.testing.assert_array_equal(_k_smallest(scores, k), want)
