"""The grain training pipeline: rows equal to the SeqIO tasks' rows, the stateless index maps, NumPy masking,
O(1) input state, exact resume mid-epoch, temperature rates, refused legacy state, content errors."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import seqio
from test_data_fixtures import make_corpus, train_spm

from data_pipelines import masking, mixing, row_cache, tasks
from data_pipelines.batch_format import BATCH_KEYS
from data_pipelines.config import DataConfig, default_data_config, max_predictions
from data_pipelines.input_pipeline import LegacyDataStateError, make_train_data


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("corpus"))
    lines = make_corpus(root)
    model = train_spm(root, str(tmp_path_factory.mktemp("spm") / "m"))
    return root, lines, model


def text_config(corpus, tmp_path, **overrides):
    cfg = default_data_config()
    cfg.source, cfg.path, cfg.vocab_path = "text", corpus[0], corpus[2]
    cfg.seq_length, cfg.shuffle_buffer = 32, 64
    cfg.decompress_dir = str(tmp_path / "cache")
    cfg.update(overrides)
    return cfg


def seqio_rows(spec, lid):
    """The SeqIO task's train rows of language `lid`, in order (one epoch, unsharded, unshuffled)."""
    task = seqio.get_mixture_or_task(spec.task_names[lid])
    ds = task.get_dataset(None, split="train", shuffle=False, num_epochs=1, try_in_mem_cache=False)
    return list(ds.as_numpy_iterator())


@pytest.mark.parametrize("packing", ["complete", "complete_doc", "none"])
def test_cached_rows_equal_the_seqio_rows(corpus, tmp_path, packing):
    cfg = text_config(corpus, tmp_path, packing=packing)
    spec = tasks.mixture_spec(cfg)
    for lid in range(len(spec.languages)):
        want = seqio_rows(spec, lid)
        rows = row_cache.load_or_build(spec, lid, DataConfig.of(cfg))
        assert len(rows) == len(want) > 0
        for i, w in enumerate(want):
            a, b = rows.offsets[i], rows.offsets[i + 1]
            n = int((w["input_ids"] != 1).sum())
            np.testing.assert_array_equal(rows.ids[a:b], w["input_ids"][:n])
            assert rows.restart[i] == n
            stats = [int(w[k]) for k in ("stat_lines", "stat_bad", "stat_split", "stat_truncated")]
            assert rows.stats[i].tolist() == stats


def test_cached_tlm_rows_equal_the_seqio_rows(corpus, tmp_path):
    par = tmp_path / "par"
    par.mkdir()
    with open(par / "en-fr.tsv", "w", encoding="utf-8") as f:
        for i in range(60):
            f.write(f"the dog {i} runs {'far ' * (i % 13)}\tle chien {i} court {'loin ' * (i % 17)}\n")
            if i % 9 == 4:
                f.write("no tab here\n")
    cfg = text_config(corpus, tmp_path, tlm_rate=0.3, parallel_path=str(par))
    spec = tasks.mixture_spec(cfg)
    lid = spec.languages.index("en-fr")
    want = seqio_rows(spec, lid)
    rows = row_cache.load_or_build(spec, lid, DataConfig.of(cfg))
    assert len(rows) == len(want) > 0
    assert sum(int(w["stat_truncated"]) for w in want) > 0 and sum(int(w["stat_bad"]) for w in want) > 0
    for i, w in enumerate(want):
        a, b = rows.offsets[i], rows.offsets[i + 1]
        n = b - a
        np.testing.assert_array_equal(rows.ids[a:b], w["input_ids"][:n])
        r = rows.restart[i]
        np.testing.assert_array_equal(np.r_[np.arange(r), np.arange(n - r)] + 2, w["positions"][:n])
        assert rows.stats[i].tolist() == [int(w[k]) for k in ("stat_lines", "stat_bad", "stat_split", "stat_truncated")]


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
    vocab = tasks.load_vocab(corpus[2])
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
        cfg = text_config(corpus, tmp_path, path=root, seq_length=16)
        data = make_train_data(cfg, global_batch_size=8, seed=1)
        for _ in range(3):
            next(data)
        data.save(str(tmp_path / f"state{n}"))
        files = os.listdir(tmp_path / f"state{n}")
        sizes[n] = sum(os.path.getsize(tmp_path / f"state{n}" / f) for f in files)
        assert len(files) == 1
    assert abs(sizes[50] - sizes[3]) < 300 and sizes[50] < 1_000_000, sizes


def test_exact_resume_across_epochs_and_hosts(corpus, tmp_path):
    cfg = text_config(corpus, tmp_path)
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
    assert a._lo[2] + a._n[2] == b._lo[2] and b._lo[2] + b._n[2] == len(a._rows[2])


def test_rows_of_an_epoch_are_each_seen_once(corpus, tmp_path):
    cfg = text_config(corpus, tmp_path)
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


def test_language_frequencies_match_the_rates(corpus, tmp_path):
    sizes = {"en": 100_000.0, "fr": 3_000.0, "ru": 20.0}
    cfg = text_config(corpus, tmp_path, seq_length=16, alpha=0.3)
    cfg.sizes.update(sizes)
    data = make_train_data(cfg, global_batch_size=250, seed=3)
    langs = np.concatenate([next(data)["language"] for _ in range(16)])
    z = sum(s**0.3 for s in sizes.values())
    for i, lang in enumerate(data.languages):
        p = sizes[lang] ** 0.3 / z
        assert abs(np.mean(langs == i) - p) < 4 * math.sqrt(p * (1 - p) / langs.size), lang


def test_old_tfdata_state_is_refused_by_name(corpus, tmp_path):
    cfg = text_config(corpus, tmp_path)
    data = make_train_data(cfg, global_batch_size=4, seed=0)
    d = tmp_path / "old"
    d.mkdir()
    old = {k: v for k, v in data._meta().items() if k != "format"}
    old["checkpoint"] = "input_pipeline-00000-of-00001-1"  # the tf.train.Checkpoint prefix it used to write
    (d / "input_pipeline-00000-of-00001.json").write_text(json.dumps(old))
    with pytest.raises(LegacyDataStateError, match=r"old tf\.data pipeline.*restore_data=False"):
        data.restore(str(d))


def test_undecodable_line_names_file_and_line(corpus, tmp_path):
    root = tmp_path / "bad"
    root.mkdir()
    with open(root / "en.txt", "wb") as f:
        for i in range(40):
            f.write(f"the dog {i} runs\n".encode())
            if i == 20:
                f.write(b"bad \xff\xfe bytes\n")
    cfg = text_config(corpus, tmp_path, path=str(root))
    with pytest.raises(row_cache.ContentError, match=r"en\.txt:22: not valid UTF-8"):
        make_train_data(cfg, global_batch_size=4)


def test_second_start_reads_the_cache(corpus, tmp_path, monkeypatch):
    cfg = text_config(corpus, tmp_path)
    first = next(make_train_data(cfg, global_batch_size=8, seed=9))

    def no_build(*a, **k):
        raise AssertionError("rows were rebuilt although cached")

    monkeypatch.setattr(row_cache, "build_mono_rows", no_build)
    again = next(make_train_data(cfg, global_batch_size=8, seed=9))
    for k in BATCH_KEYS:
        np.testing.assert_array_equal(first[k], again[k])


def _write_sources(root, kind):
    """A small stand-in of each real-corpus format, two languages: the lines carry document breaks."""
    import lzma

    import tensorflow as tf

    docs = {
        lang: [f"{lang} doc {i} " + " ".join(["word"] * (i % 9 + 1)) + f"\nsecond line {i}" for i in range(40)]
        for lang in ("en", "fr")
    }
    for lang, ds in docs.items():
        if kind == "cc100_xz":
            with lzma.open(os.path.join(root, f"{lang}.txt.xz"), "wt", encoding="utf-8") as f:
                f.write("".join(d + "\n\n" for d in ds))
        elif kind == "jsonl":
            with open(os.path.join(root, f"{lang}.jsonl"), "w", encoding="utf-8") as f:
                f.write("".join(json.dumps({"text": d}) + "\n" for d in ds))
        else:
            for split, part in (("train", ds[:36]), ("validation", ds[36:])):
                with tf.io.TFRecordWriter(os.path.join(root, f"{lang}-{split}.tfrecord-00000-of-00001")) as w:
                    for d in part:
                        feat = {"text": tf.train.Feature(bytes_list=tf.train.BytesList(value=[d.encode()]))}
                        w.write(tf.train.Example(features=tf.train.Features(feature=feat)).SerializeToString())


@pytest.mark.parametrize("kind", ["cc100_xz", "jsonl", "tfrecord"])
def test_cached_rows_of_real_corpus_formats(corpus, tmp_path, kind):
    root = tmp_path / kind
    root.mkdir()
    _write_sources(str(root), kind)
    source = {"cc100_xz": "cc100", "jsonl": "jsonl", "tfrecord": "tfrecord"}[kind]
    cfg = text_config(corpus, tmp_path, source=source, path=str(root), packing="complete_doc", languages=("en", "fr"))
    spec = tasks.mixture_spec(cfg)
    for lid in range(2):
        want = seqio_rows(spec, lid)
        rows = row_cache.load_or_build(spec, lid, DataConfig.of(cfg))
        assert len(rows) == len(want) > 0
        for i, w in enumerate(want):
            n = int((w["input_ids"] != 1).sum())
            np.testing.assert_array_equal(rows.ids[rows.offsets[i] : rows.offsets[i + 1]], w["input_ids"][:n])
    assert next(make_train_data(cfg, global_batch_size=4))["input_ids"].shape == (4, 32)


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
    cfg = text_config(corpus, tmp_path, source="mc4", path="", tfds_data_dir=d, languages=("en",), packing="none")
    cfg.seq_length = 128
    spec = tasks.mixture_spec(cfg)
    calls = []
    real = tfds.data_source
    monkeypatch.setattr(tfds, "data_source", lambda *a, **k: calls.append(a) or real(*a, **k))
    rows = row_cache.load_or_build(spec, 0, DataConfig.of(cfg))
    assert calls, "the array_record split was not read through tfds.data_source"
    # packing "none", rows longer than any line: a row per line (SeqIO's tf.data path cannot read array_record;
    # TFDS shuffled the documents when it stored them, so compare the documents, each a pair of rows)
    want = sorted([[0, *spec.vocab.encode(line), 2] for line in doc.split("\n")] for doc in docs)
    got = [rows.ids[rows.offsets[i] : rows.offsets[i + 1]].tolist() for i in range(len(rows))]
    assert len(got) == 60 and sorted(got[i : i + 2] for i in range(0, 60, 2)) == want


def test_balanced_eval_data_is_read_at_first_use_once(monkeypatch):
    from data_pipelines import eval_data

    calls = []
    fake = [{"input_ids": np.zeros((2, 4), np.int32)}]
    monkeypatch.setattr(eval_data, "make_balanced_eval_data", lambda *a, **k: calls.append(k) or fake)
    ev = eval_data.BalancedEvalData(default_data_config(), batch_size=2, num_batches=3)
    assert calls == []  # nothing read at start-up
    assert list(ev) == fake and list(ev) == fake
    assert calls == [{"batch_size": 2, "num_batches": 3}]
