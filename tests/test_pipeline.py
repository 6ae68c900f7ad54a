"""The input pipeline: config, temperature sampling, row building (`packing`), NumPy masking, TLM rows, batches,
resume, held-out batches.

Runs on small temp corpora and a tiny SentencePiece model trained in a fixture (no network); the prepared rows
live in the module's temp folder (`data.decompress_dir`), prepared once per distinct corpus/seq_length/packing.
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np
import pytest
from test_data_fixtures import LINES, make_corpus, train_spm

from data_pipelines import dataset, masking, packing, prepare
from data_pipelines.batch_format import BATCH_KEYS, max_predictions, row_arrays
from data_pipelines.config import DataConfig, default_data_config, validate_data_config
from data_pipelines.eval_data import make_eval_data
from data_pipelines.input_pipeline import make_train_data
from data_pipelines.vocab import XLMRVocabulary


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("corpus"))
    lines = make_corpus(root)
    model = train_spm(root, str(tmp_path_factory.mktemp("spm") / "m"))
    return root, lines, model, str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def vocab(corpus):
    return XLMRVocabulary(corpus[2])


def text_config(corpus, **overrides):
    cfg = default_data_config()
    cfg.source = "text"
    cfg.path = corpus[0]
    cfg.vocab_path = corpus[2]
    cfg.seq_length = 32
    cfg.shuffle_buffer = 64
    cfg.decompress_dir = corpus[3]
    cfg.update(overrides)
    return cfg


def open_prepared(cfg) -> dataset.PreparedData:
    cfg = DataConfig.of(cfg)
    return dataset.open_prepared(cfg, prepare.vocab_sha256(cfg.vocab_path))


# ---------------------------------------------------------------------------------------------------------------
# 1. config
# ---------------------------------------------------------------------------------------------------------------
def test_default_config_and_max_predictions():
    cfg = default_data_config()
    validate_data_config(cfg)
    assert (cfg.alpha, cfg.seq_length, cfg.mlm_rate, cfg.mask_prob, cfg.random_prob) == (0.3, 128, 0.15, 0.8, 0.1)
    assert cfg.whole_word_masking is False and cfg.source == "sample"
    assert cfg.vocab_path.endswith("data_pipelines/sample_vocab/sentencepiece.bpe.model")
    assert max_predictions(512, 0.15) == 78  # ceil(76.8) + 1
    assert max_predictions(128, 0.15) == 21  # ceil(19.2) + 1
    assert max_predictions(100, 0.15) == 16  # ceil(15.000000000000002) + 1 would be 17; 100 * 0.15 == 15.000..02
    assert max_predictions(8, 0.9) == 8  # ceil(7.2) + 1 = 9, but a row has only 8 positions


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("source", "mc5", r"data\.source='mc5'"),
        ("alpha", 1.5, r"data\.alpha=1\.5"),
        ("seq_length", 4, r"data\.seq_length=4"),
        ("packing", "greedy", r"data\.packing='greedy'"),
        ("mlm_rate", 0.0, r"data\.mlm_rate=0\.0"),
        ("random_prob", 0.5, r"data\.random_prob=0\.5"),
        ("tlm_rate", 1.0, r"data\.tlm_rate=1\.0"),
    ],
)
def test_validate_names_the_field(field, value, match):
    cfg = default_data_config()
    cfg[field] = value
    with pytest.raises(ValueError, match=match):
        validate_data_config(cfg)


def test_data_config_is_the_schema_typed():
    section = default_data_config()
    typed = DataConfig.from_section(section)
    assert sorted(f.name for f in dataclasses.fields(DataConfig)) == sorted(section.keys())  # the same fields
    assert all(f.default is dataclasses.MISSING for f in dataclasses.fields(DataConfig))  # no second defaults
    assert {f: getattr(typed, f) for f in section.keys() if f != "sizes"} == {
        f: section[f] for f in section.keys() if f != "sizes"
    }
    assert DataConfig.from_section(section.to_dict()) == typed  # a plain dict reads the same
    assert DataConfig.of(typed) is typed and validate_data_config(section) == typed
    section.languages = ["fr", "en"]
    section.sizes.en = 1000
    typed = DataConfig.of(section)
    assert typed.languages == ("fr", "en") and typed.sizes == (("en", 1000),)
    assert hash(typed) == hash(DataConfig.of(section))  # frozen and hashable
    with pytest.raises(dataclasses.FrozenInstanceError):
        typed.seq_length = 64


def test_data_config_refuses_missing_and_unknown_fields():
    values = default_data_config().to_dict()
    del values["packing"]
    with pytest.raises(ValueError, match=r"^data\.packing is missing from the data config$"):
        DataConfig.from_section(values)
    values = dict(default_data_config().to_dict(), pakcing="none")
    with pytest.raises(ValueError, match=r"^data\.pakcing is not a data field \(the fields: alpha, decompress_dir"):
        DataConfig.from_section(values)
    with pytest.raises(ValueError, match=r"data\.parallel_languages='de': expected a list of language codes"):
        DataConfig.from_section(dict(default_data_config().to_dict(), parallel_languages="de"))


# ---------------------------------------------------------------------------------------------------------------
# 3. temperature sampling
# ---------------------------------------------------------------------------------------------------------------
def test_rates_follow_counted_sizes(corpus):
    mixture = open_prepared(text_config(corpus)).mixture
    assert mixture.languages == ("en", "fr", "ru")
    # n_l = training lines (blank separators included): all but the last ceil(10 %) of each file's lines.
    for lang, n in LINES.items():
        total = n + n // 7
        assert mixture.sizes[lang] == total - -(-total // 10)  # validation: the last ceil(10 %)
    z = sum(s**0.3 for s in mixture.sizes.values())
    for lang, s in mixture.sizes.items():
        assert mixture.rates[lang] == pytest.approx(s**0.3 / z)
    assert open_prepared(text_config(corpus)).mixture == mixture  # the same prepared rows: the same name and rates
    other = open_prepared(text_config(corpus, alpha=0.7)).mixture  # same rows (no new prepare), other rates
    assert other.sizes == mixture.sizes and other.name != mixture.name
    z7 = sum(s**0.7 for s in mixture.sizes.values())
    assert all(other.rates[lang] == pytest.approx(s**0.7 / z7) for lang, s in mixture.sizes.items())
    assert other.rates["ru"] < mixture.rates["ru"]  # a higher alpha flattens less


def test_empirical_language_frequencies_match_temperature_formula(corpus):
    sizes = {"en": 100_000.0, "fr": 3_000.0, "ru": 20.0}
    cfg = text_config(corpus, shuffle_buffer=0, alpha=0.3)
    cfg.sizes.update(sizes)
    data = make_train_data(cfg, global_batch_size=250, seed=3)
    langs = np.concatenate([next(data)["language"] for _ in range(16)])
    n = langs.size  # 4000 examples
    z = sum(s**0.3 for s in sizes.values())
    for i, lang in enumerate(data.languages):
        p = sizes[lang] ** 0.3 / z
        freq = float(np.mean(langs == i))
        assert abs(freq - p) < 4 * math.sqrt(p * (1 - p) / n), (lang, freq, p)
    # alpha=0.3 flattens: the smallest language gets far more than its share of the data.
    assert np.mean(langs == data.languages.index("ru")) > 10 * sizes["ru"] / sum(sizes.values())


# ---------------------------------------------------------------------------------------------------------------
# 4. row building, MLM masking, TLM
# ---------------------------------------------------------------------------------------------------------------
def _stream(lines, name="test.txt"):
    """`(where, bytes)` of each line, as `line_sources.read_lines` yields them."""
    return ((f"{name}:{i + 1}", x if isinstance(x, bytes) else x.encode()) for i, x in enumerate(lines))


def _rows(vocab, lines, seq_length=32, mode="complete"):
    """Rows of `lines` as training reads them: packed (`packing`), then padded (`row_arrays`), one dict a row."""
    rows = packing.build_mono_rows(_stream(lines), vocab, seq_length=seq_length, mode=mode)
    return _padded(rows, seq_length, vocab.pad_id)


def _padded(rows: packing.Rows, seq_length: int, pad_id: int) -> list[dict]:
    out = []
    for i in range(len(rows)):
        record = (rows.ids[rows.offsets[i] : rows.offsets[i + 1]], int(rows.restart[i]), rows.stats[i])
        ids, positions, _ = row_arrays([record], seq_length, pad_id)
        stats = dict(zip(packing.STAT_KEYS, rows.stats[i].tolist(), strict=True))
        out.append({"input_ids": ids[0], "positions": positions[0], **stats})
    return out


def test_rows_are_complete_lines_like_xlmr(vocab, corpus):
    lines = corpus[1]["en"][:40]
    rows = _rows(vocab, lines)
    stream = []
    for line in lines:
        stream += [*vocab.encode(line), vocab.eos_id]
    got = []
    for r in rows:
        ids = r["input_ids"]
        n = int((ids != vocab.pad_id).sum())
        assert ids[0] == vocab.bos_id and (ids[n:] == vocab.pad_id).all()
        np.testing.assert_array_equal(r["positions"][:n], np.arange(n) + 2)
        assert (r["positions"][n:] == 1).all()
        got += ids[1:n].tolist()
        # a row ends at a line end unless it is a piece of a line longer than a row
        assert ids[n - 1] == vocab.eos_id or n == 32
    assert got == stream  # nothing lost, nothing reordered, nothing truncated
    long_lines = sum(len(vocab.encode(x)) + 1 > 31 for x in lines)
    assert long_lines > 0 and sum(int(r["stat_split"]) for r in rows) == long_lines
    assert sum(int(r["stat_lines"]) for r in rows) == 40


def test_packing_modes(vocab):
    lines = ["a b", "c d", "", "e f", "g"]
    complete = _rows(vocab, lines, mode="complete")
    per_doc = _rows(vocab, lines, mode="complete_doc")
    one_each = _rows(vocab, lines, mode="none")
    assert (len(complete), len(per_doc), len(one_each)) == (1, 2, 4)
    n = [int((r["input_ids"] != 1).sum()) for r in per_doc]
    assert n[0] == 1 + len(vocab.encode("a b")) + len(vocab.encode("c d")) + 2


def test_rows_never_cross_a_packing_block(vocab):
    """Rows are packed in blocks of `block_lines` lines, so any run of whole blocks packs on its own (what lets
    `prepare` pack its work units in parallel): the stream's rows = the rows of each block, concatenated."""
    block = packing.block_lines(8)
    lines = [f"w{i % 5}" for i in range(2 * block + 7)]  # short lines: many fit in a row

    def ids(rows):
        return [rows.ids[rows.offsets[i] : rows.offsets[i + 1]].tolist() for i in range(len(rows))]

    whole = ids(packing.build_mono_rows(_stream(lines), vocab, seq_length=8, mode="complete"))
    parts = [lines[:block], lines[block : 2 * block], lines[2 * block :]]
    assert whole == sum((ids(packing.build_mono_rows(_stream(p), vocab, seq_length=8, mode="complete")) for p in parts), [])  # fmt: skip
    assert len(whole) > 3 and all(len(r) <= 8 for r in whole)


def test_an_undecodable_line_stops_the_rows_naming_it(vocab):
    lines = [b"a b", b"c \xff d", b"e"]
    for build in (
        lambda: packing.build_mono_rows(_stream(lines, "en.txt"), vocab, seq_length=32, mode="complete"),
        lambda: packing.build_pair_rows(_stream([b"x\ty", *lines], "en-fr.tsv"), vocab, seq_length=32),
    ):
        with pytest.raises(packing.ContentError, match=r"\.(txt|tsv):[23]: not valid UTF-8 \(byte 2: b'\\xff d'"):
            build()


def _random_rows(vocab, b=300, t=128, seed=0):
    rng = np.random.default_rng(seed)
    rows = np.full((b, t), vocab.pad_id, np.int32)
    lengths = rng.integers(5, t, size=b)
    for i, n in enumerate(lengths):
        rows[i, 0], rows[i, n - 1] = vocab.bos_id, vocab.eos_id
        rows[i, 1 : n - 1] = rng.integers(3, vocab.vocab_size - 1, size=n - 2)
    return rows, lengths


def _mask_kw(vocab, t, **kw):
    return dict(
        vocab_size=vocab.vocab_size,
        mask_id=vocab.mask_id,
        special_ids=(0, 1, 2, vocab.mask_id),
        mlm_rate=0.15,
        max_predictions=max_predictions(t, 0.15),
        **kw,
    )


def test_mlm_masks_are_a_function_of_the_generator(vocab):
    """The recipe's numbers are checked in test_grain_pipeline.test_numpy_masking_recipe; here: a batch's masks
    depend only on its generator (what makes resumed batches and eval masks exact), and a batch of one row works."""
    rows, lengths = _random_rows(vocab)
    kw = _mask_kw(vocab, rows.shape[1])
    out = masking.mask_tokens(rows, np.random.default_rng([7, 0, 3]), **kw)
    again = masking.mask_tokens(rows, np.random.default_rng([7, 0, 3]), **kw)
    for k in ("input_ids", "targets", "weights"):
        np.testing.assert_array_equal(again[k], out[k])
    other = masking.mask_tokens(rows, np.random.default_rng([7, 0, 4]), **kw)
    assert (other["weights"] != out["weights"]).any()
    one = masking.mask_tokens(rows[:1], np.random.default_rng(0), **dict(kw, max_predictions=20))
    assert one["weights"].shape == (1, rows.shape[1])
    assert int(one["weights"].sum()) == min(20, max(1, round((lengths[0] - 2) * 0.15)))
    assert one["input_ids"].dtype == rows.dtype and one["weights"].dtype == np.float32


def test_whole_word_masking(vocab, corpus):
    lines = corpus[1]["en"][:60]
    ids = np.stack([r["input_ids"] for r in _rows(vocab, lines, seq_length=64, mode="none")])
    starts = masking.word_start_table(vocab)
    out = masking.mask_tokens(ids, np.random.default_rng(0), **_mask_kw(vocab, 64, word_starts=starts))
    is_start = starts[ids]
    sel = out["weights"] > 0
    for i in range(len(ids)):
        n_cand = int((~np.isin(ids[i], [0, 1, 2])).sum())
        k = min(max_predictions(64, 0.15), max(1, round(n_cand * 0.15)))
        assert 0 < sel[i].sum() <= k
        # whole words: a selected non-start piece has its predecessor selected too
        for j in range(1, 64):
            if sel[i, j] and not is_start[i, j]:
                assert sel[i, j - 1]


def test_tlm_rows(vocab):
    lines = ["the quick dog\tle chat noir", "no tab here", "a " * 40 + "\t" + "la " * 40, "\tonly a target"]
    rows = _padded(packing.build_pair_rows(_stream(lines), vocab, seq_length=32), 32, vocab.pad_id)
    assert len(rows) == 2  # the line without a TAB and the one without a source make no row
    r = rows[0]
    src, tgt = vocab.encode("the quick dog"), vocab.encode("le chat noir")
    expect = [0, *src, 2, 2, *tgt, 2]
    n = len(expect)
    assert r["input_ids"][:n].tolist() == expect and (r["input_ids"][n:] == 1).all()
    assert r["positions"][:n].tolist() == [*range(2, len(src) + 4), *range(2, len(tgt) + 4)]
    assert (r["stat_lines"], r["stat_bad"], r["stat_truncated"]) == (1, 0, 0)
    long = rows[1]
    assert (long["input_ids"] != 1).sum() == 32 and long["stat_truncated"] == 1
    # both sides cut to half the budget: <s> 14 source ids </s></s> 14 target ids </s>
    assert long["input_ids"][15:17].tolist() == [2, 2] and long["positions"][15:18].tolist() == [17, 2, 3]
    assert long["stat_bad"] == 1  # the malformed line before it is counted on the next row


# ---------------------------------------------------------------------------------------------------------------
# 5. batches, determinism, resume, held-out batches
# ---------------------------------------------------------------------------------------------------------------
def test_batch_format_and_determinism(corpus):
    cfg = text_config(corpus)
    a = make_train_data(cfg, global_batch_size=8, seed=1)
    assert a.languages == ["en", "fr", "ru"] and a.seq_length == 32 and isinstance(a.vocab, XLMRVocabulary)
    b = make_train_data(cfg, global_batch_size=8, seed=1)
    ba, bb = next(a), next(b)
    assert set(ba) == set(BATCH_KEYS)
    dtypes = dict(input_ids=np.int32, attention_mask=np.int32, positions=np.int32, targets=np.int32)
    for k, dt in dict(dtypes, weights=np.float32).items():
        assert ba[k].dtype == dt and ba[k].shape == (8, 32), k
    assert ba["language"].dtype == np.int32 and ba["language"].shape == (8,)
    for k in BATCH_KEYS:
        np.testing.assert_array_equal(ba[k], bb[k])
    np.testing.assert_array_equal(ba["attention_mask"], (ba["positions"] != 1).astype(np.int32))
    w = ba["weights"].sum(1)
    assert (w >= 1).all() and (w <= max_predictions(32, 0.15)).all()
    assert ((ba["targets"] != 0) == (ba["weights"] > 0)).all()


def test_save_restore_continues_exactly(corpus, tmp_path):
    cfg = text_config(corpus)
    run = make_train_data(cfg, global_batch_size=4, seed=7)
    for _ in range(3):
        next(run)
    run.save(str(tmp_path / "it"))
    expected = [next(run) for _ in range(5)]  # the uninterrupted run's batches 4..8
    resumed = make_train_data(cfg, global_batch_size=4, seed=7)
    resumed.restore(str(tmp_path / "it"))
    assert resumed.batches_seen == 3 and sum(resumed.stats.values()) > 0
    for want in expected:
        got = next(resumed)
        for k in BATCH_KEYS:
            np.testing.assert_array_equal(got[k], want[k])
    assert resumed.stats == run.stats
    with pytest.raises(FileNotFoundError, match="no input-pipeline state"):
        resumed.restore(str(tmp_path / "elsewhere"))
    resumed.seed = 8  # a pipeline with another seed refuses the state
    with pytest.raises(ValueError, match="seed=7"):
        resumed.restore(str(tmp_path / "it"))


def test_eval_data_is_finite_deterministic_and_complete(corpus, vocab):
    cfg = text_config(corpus, packing="none")
    ev = make_eval_data(cfg, batch_size=16)
    batches = list(ev)
    again = list(ev)
    assert len(batches) == len(again) > 1
    for x, y in zip(batches, again, strict=True):
        for k in BATCH_KEYS:
            np.testing.assert_array_equal(x[k], y[k])
    langs = np.concatenate([b["language"][b["attention_mask"].any(1)] for b in batches])
    assert set(langs.tolist()) == {0, 1, 2}
    # every held-out line is there (validation = the last 10 % of lines; blank lines make no row)
    rows = int(sum(b["attention_mask"].any(1).sum() for b in batches))
    expect = 0
    for lang, n in LINES.items():
        total = n + n // 7
        start = total - -(-total // 10)
        with open(os.path.join(corpus[0], f"{lang}.txt"), encoding="utf-8") as f:
            held = f.read().split("\n")[start:total]
        expect += sum(-(-(len(vocab.encode(x)) + 1) // 31) for x in held if x.strip())
    assert rows == expect
    only_fr = list(make_eval_data(cfg, batch_size=16, languages=["fr"]))
    assert {int(x) for b in only_fr for x in b["language"][b["attention_mask"].any(1)]} == {1}
    # a language's rows and masks do not depend on which other languages are evaluated
    for k in ("input_ids", "weights"):
        fr_all = np.concatenate([b[k][b["language"] == 1] for b in batches])
        fr_only = np.concatenate([b[k][(b["language"] == 1) & b["attention_mask"].any(1)] for b in only_fr])
        np.testing.assert_array_equal(fr_all, fr_only)
    last = batches[-1]
    pad_rows = ~last["attention_mask"].any(1)
    assert (last["weights"][pad_rows] == 0).all() and (last["input_ids"][pad_rows] == 1).all()


def test_mixture_with_tlm(corpus, tmp_path):
    par = tmp_path / "par"
    par.mkdir()
    with open(par / "en-fr.tsv", "w", encoding="utf-8") as f:
        for i in range(50):
            f.write(f"the dog {i} runs\tle chien {i} court\n")
    cfg = text_config(corpus, tlm_rate=0.5, parallel_path=str(par), shuffle_buffer=0)
    data = make_train_data(cfg, global_batch_size=64, seed=0)
    assert data.languages == ["en", "fr", "ru", "en-fr"]
    assert data.spec.rates["en-fr"] == pytest.approx(0.5)
    batch = next(data)
    tlm = batch["language"] == 3
    assert 16 < tlm.sum() < 48
    # TLM rows: positions restart after `</s></s>`
    row = batch["positions"][np.argmax(tlm)]
    assert (np.diff(row[row > 1]) < 0).sum() == 1


# ---------------------------------------------------------------------------------------------------------------
# the shipped sample (source "sample") with the shipped vocabulary
# ---------------------------------------------------------------------------------------------------------------
def test_shipped_sample_mlm_and_tlm(sample_vocab, tmp_path):
    from data_pipelines import sample

    cfg = default_data_config()  # source "sample", the shipped vocabulary
    cfg.decompress_dir = str(tmp_path)
    assert cfg.vocab_path == sample_vocab.spm_model_path
    cfg.languages = ("en", "fr", "ru")
    cfg.tlm_rate = 0.3
    cfg.parallel_languages = ("fr",)
    cfg.shuffle_buffer = 32
    data = make_train_data(cfg, global_batch_size=16, seed=0)
    assert data.languages == ["en", "fr", "ru", "en-fr"] and data.vocab.vocab_size == 8002
    n_fr = len(sample.read_mono("fr", "train"))
    assert data.spec.sizes["fr"] == n_fr and data.spec.sizes["en-fr"] == len(sample.read_parallel("fr", "train"))
    batch = next(data)
    assert batch["input_ids"].shape == (16, 128) and batch["input_ids"].max() < 8002
    assert (batch["weights"].sum(1) >= 1).all()
    ev = list(make_eval_data(cfg, batch_size=32, languages=["ru"]))
    held_out = sum(int(b["attention_mask"].any(1).sum()) for b in ev)
    assert 0 < held_out <= len(sample.read_mono("ru", "validation"))
