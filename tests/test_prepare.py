"""Prepared data (`data_pipelines.prepare`, `shards`, `dataset`): the manifest and its shards; what a missing or
truncated shard, a foreign manifest and an unfinished prepare get; when a run prepares and when it does not; the
input state's format; eval masks that depend only on the language and the row.

A module-scoped folder is prepared once (small work units, so a split has several shards) and only read; tests
that damage a folder damage their own copy under tmp_path.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from helpers import REPO
from test_data_fixtures import make_corpus, train_spm

from data_pipelines import dataset, prepare, shards
from data_pipelines.batch_format import BATCH_KEYS, row_arrays
from data_pipelines.config import DataConfig, default_data_config
from data_pipelines.eval_data import EvalData
from data_pipelines.input_pipeline import STATE_FORMAT, LegacyDataStateError, NumpyMasker, make_train_data
from data_pipelines.vocab import SAMPLE_VOCAB_PATH, XLMRVocabulary


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    make_corpus(str(root))  # en 400 lines, fr 120, ru 60 (a blank line every 7)
    return root, train_spm(str(root), str(tmp_path_factory.mktemp("spm") / "m"))


def config(corpus, **overrides):
    cfg = default_data_config()
    cfg.source, cfg.path, cfg.vocab_path = "text", str(corpus[0]), corpus[1]
    cfg.seq_length, cfg.shuffle_buffer = 32, 64
    cfg.update(overrides)
    return cfg


@pytest.fixture(scope="module")
def prepared(corpus, tmp_path_factory):
    """The corpus prepared in work units of one packing block (256 lines): English train has 2 shards."""
    out = tmp_path_factory.mktemp("prepared") / "data"
    manifest = prepare.prepare(DataConfig.of(config(corpus)), str(out), unit_lines=1)
    return out, manifest


def copy_of(prepared, tmp_path):
    dest = tmp_path / "data"
    shutil.copytree(prepared[0], dest)
    return dest


def listing(folder) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in sorted(folder.iterdir())}


def all_rows(data: dataset.PreparedData, entry: str, split: str) -> list[tuple[list[int], int, list[int]]]:
    rows = data.rows(entry, split)
    return [(ids.tolist(), restart, stats.tolist()) for ids, restart, stats in rows.get(range(len(rows)))]


def open_prepared(cfg) -> dataset.PreparedData:
    cfg = DataConfig.of(cfg)
    return dataset.open_prepared(cfg, prepare.vocab_sha256(cfg.vocab_path))


@pytest.fixture
def no_prepare(monkeypatch):
    """Any prepare from here on fails the test."""

    def refuse(*a, **k):
        raise AssertionError(f"prepared again: {a[1] if len(a) > 1 else k}")

    monkeypatch.setattr(prepare, "prepare", refuse)


# ---------------------------------------------------------------------------------------------------------------
# The manifest and its shards
# ---------------------------------------------------------------------------------------------------------------
def test_manifest_describes_the_shards(corpus, prepared):
    folder, manifest = prepared
    assert manifest == shards.read_manifest(str(folder))
    assert (manifest["format"], manifest["seq_length"], manifest["packing"]) == (shards.FORMAT, 32, "complete")
    assert manifest["vocab"] == {"path": corpus[1], "sha256": prepare.vocab_sha256(corpus[1])}
    assert manifest["entries"] == ["en", "fr", "ru"]
    splits = shards.splits_of(manifest)
    assert sorted(splits) == [(e, s) for e in ("en", "fr", "ru") for s in ("train", "validation")]
    # the files are the shards the manifest lists, and nothing else (the work folder is gone)
    listed = {sh["file"]: sh["bytes"] for sp in splits.values() for sh in sp.shards}
    assert listing(folder) == {**listed, shards.MANIFEST: os.path.getsize(folder / shards.MANIFEST)}
    en = splits["en", "train"]
    assert [sh["file"] for sh in en.shards] == [shards.shard_name("en", "train", i, 2) for i in range(2)]
    assert en.examples == 411  # lines of the train split: 457 - ceil(45.7), blank separators included
    data = open_prepared(config(corpus, prepared_dir=str(folder)))
    for (entry, split), info in splits.items():
        rows = all_rows(data, entry, split)
        assert len(rows) == info.rows == sum(sh["rows"] for sh in info.shards) > 0
        assert sum(len(ids) for ids, _, _ in rows) == info.tokens
        assert np.sum([st for _, _, st in rows], 0).tolist() == list(info.stats)
        assert all(ids[0] == 0 and len(ids) <= 32 and r == len(ids) for ids, r, _ in rows)  # MLM: no restart
    assert splits["ru", "validation"].stats[0] == 6  # its 6 non-blank held-out lines


def test_rows_do_not_depend_on_work_units_or_workers(corpus, prepared, tmp_path):
    """One unit per split (the default size) or a unit per packing block, one worker or two threads: the same
    rows; with the same units the shards are byte-identical."""
    cfg = DataConfig.of(config(corpus))
    whole = prepare.prepare(cfg, str(tmp_path / "whole"))
    assert all(len(s["shards"]) == 1 for s in whole["splits"])
    two = ["--runner=DirectRunner", "--direct_num_workers=2", "--direct_running_mode=multi_threading"]
    prepare.prepare(cfg, str(tmp_path / "threads"), two, unit_lines=1)
    a = open_prepared(config(corpus, prepared_dir=str(prepared[0])))
    b = open_prepared(config(corpus, prepared_dir=str(tmp_path / "whole")))
    for entry, split in a.splits:
        assert all_rows(a, entry, split) == all_rows(b, entry, split)
    assert a.mixture == b.mixture
    for name in listing(prepared[0]):
        if name != shards.MANIFEST:
            assert (tmp_path / "threads" / name).read_bytes() == (prepared[0] / name).read_bytes(), name


@pytest.mark.slow
def test_two_worker_processes_write_byte_identical_shards_and_manifest(corpus, prepared, tmp_path):
    """Beam's multi-process runner (each worker a fresh interpreter): every file, the manifest included, is the
    one-worker run's byte for byte."""
    cfg = DataConfig.of(config(corpus))
    two = ["--runner=DirectRunner", "--direct_num_workers=2", "--direct_running_mode=multi_processing"]
    prepare.prepare(cfg, str(tmp_path / "processes"), two, unit_lines=1)
    assert listing(tmp_path / "processes") == listing(prepared[0])
    for name in listing(prepared[0]):
        assert (tmp_path / "processes" / name).read_bytes() == (prepared[0] / name).read_bytes(), name


# ---------------------------------------------------------------------------------------------------------------
# Damaged, foreign and unfinished folders
# ---------------------------------------------------------------------------------------------------------------
def test_a_missing_shard_is_refused_naming_it(corpus, prepared, tmp_path, no_prepare):
    folder = copy_of(prepared, tmp_path)
    gone = folder / shards.shard_name("en", "train", 1, 2)
    gone.unlink()
    with pytest.raises(shards.PreparedDataError, match=rf"^{re.escape(str(gone))}: shard missing \(the manifest"):
        make_train_data(config(corpus, prepared_dir=str(folder)), global_batch_size=4)


def test_a_truncated_shard_is_refused_naming_it(corpus, prepared, tmp_path, no_prepare):
    folder = copy_of(prepared, tmp_path)
    cut = folder / shards.shard_name("fr", "validation", 0, 1)
    size = cut.stat().st_size
    with open(cut, "r+b") as f:
        f.truncate(size - 7)
    with pytest.raises(
        shards.PreparedDataError,
        match=rf"^{re.escape(str(cut))}: {size - 7} bytes, the manifest says {size} \(truncated",
    ):
        open_prepared(config(corpus, prepared_dir=str(folder))).rows("fr", "validation")
    data = open_prepared(config(corpus, prepared_dir=str(folder)))
    assert len(data.rows("fr", "train")) > 0  # the other splits still open: the check is per shard


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"seq_length": 64}, r"manifest\.json was prepared with seq_length 32, this run has 64: prepare again"),
        ({"packing": "none"}, r"manifest\.json was prepared with packing 'complete', this run has 'none'"),
        (
            {"vocab_path": SAMPLE_VOCAB_PATH},
            r"manifest\.json was prepared with vocabulary '.*m\.model \(sha256 [0-9a-f]{12}\)', this run has '[0-9a-f]{12}'",
        ),  # fmt: skip
        ({"languages": ("en", "de")}, r"manifest\.json has no \['de'\] \(it has \['en', 'fr', 'ru'\]\)"),
    ],
)
def test_a_foreign_manifest_is_refused_naming_it(corpus, prepared, no_prepare, overrides, message):
    cfg = config(corpus, prepared_dir=str(prepared[0]), **overrides)
    with pytest.raises(shards.PreparedDataError, match=rf"^{re.escape(str(prepared[0]))}/{message}"):
        make_train_data(cfg, global_batch_size=4)


def test_a_manifest_of_another_format_is_refused(corpus, prepared, tmp_path, no_prepare):
    folder = copy_of(prepared, tmp_path)
    manifest = json.loads((folder / shards.MANIFEST).read_text())
    (folder / shards.MANIFEST).write_text(json.dumps(dict(manifest, format="xlmp-prepared-0")))
    with pytest.raises(shards.PreparedDataError, match=r"manifest\.json: format 'xlmp-prepared-0', this reader reads"):
        make_train_data(config(corpus, prepared_dir=str(folder)), global_batch_size=4)


def test_an_interrupted_prepare_is_refused_not_prepared_over(corpus, prepared, tmp_path, no_prepare):
    """Shards but no manifest (it is written last): the folder is named, and left as it is."""
    folder = copy_of(prepared, tmp_path)
    (folder / shards.MANIFEST).unlink()
    before = listing(folder)
    with pytest.raises(shards.PreparedDataError, match=rf"^{re.escape(str(folder / shards.MANIFEST))}: no manifest"):
        shards.read_manifest(str(folder))
    for call in (
        lambda cfg: make_train_data(cfg, global_batch_size=4),
        lambda cfg: EvalData(cfg, batch_size=4, split="validation", languages=None),
    ):
        with pytest.raises(shards.PreparedDataError, match=rf"^{re.escape(str(folder))}: has files but no manifest\.json"):  # fmt: skip
            call(config(corpus, prepared_dir=str(folder)))
    assert listing(folder) == before


@pytest.mark.parametrize("exists", [True, False])
def test_an_empty_prepared_dir_is_prepared(corpus, prepared, tmp_path, exists):
    folder = tmp_path / "fresh"
    if exists:
        folder.mkdir()
    data = make_train_data(config(corpus, prepared_dir=str(folder)), global_batch_size=8, seed=5)
    assert (folder / shards.MANIFEST).exists() and data.prepared.directory == str(folder)
    # the same rows as the module's folder (prepared in other work units): the same batches
    same = make_train_data(config(corpus, prepared_dir=str(prepared[0])), global_batch_size=8, seed=5)
    assert data.spec == same.spec
    for _ in range(3):
        got, want = next(data), next(same)
        for k in BATCH_KEYS:
            np.testing.assert_array_equal(got[k], want[k])


def test_an_interrupted_cache_folder_is_prepared_again(corpus, tmp_path):
    """Without data.prepared_dir the folder is the run's own cache: an unfinished one is emptied and redone."""
    cfg = config(corpus, decompress_dir=str(tmp_path / "cache"))
    folder = dataset.default_dir(DataConfig.of(cfg), prepare.vocab_sha256(corpus[1]))
    assert folder.startswith(str(tmp_path / "cache"))
    os.makedirs(folder)
    stale = os.path.join(folder, shards.shard_name("en", "train", 0, 3))
    with open(stale, "wb") as f:
        f.write(b"left by a prepare that died")
    assert next(make_train_data(cfg, global_batch_size=4))["input_ids"].shape == (4, 32)
    assert not os.path.exists(stale) and os.path.exists(os.path.join(folder, shards.MANIFEST))


# ---------------------------------------------------------------------------------------------------------------
# Preparing once
# ---------------------------------------------------------------------------------------------------------------
def test_a_second_start_does_not_prepare_again(corpus, tmp_path, monkeypatch):
    shutil.copytree(corpus[0], tmp_path / "corpus")
    cfg = config(corpus, path=str(tmp_path / "corpus"), decompress_dir=str(tmp_path / "cache"))
    first = make_train_data(cfg, global_batch_size=8, seed=9)
    batch = next(first)

    def refuse(*a, **k):
        raise AssertionError("prepared again although the cache folder has a manifest")

    monkeypatch.setattr(prepare, "prepare", refuse)
    again = make_train_data(cfg, global_batch_size=8, seed=9)
    assert again.prepared.directory == first.prepared.directory
    for k, v in next(again).items():
        np.testing.assert_array_equal(v, batch[k])
    assert list(EvalData(cfg, batch_size=8, split="validation", languages=["ru"]))  # eval opens the same folder
    # an input file that changed is another corpus: its cache folder is prepared (here: refused) anew
    with open(tmp_path / "corpus" / "ru.txt", "a", encoding="utf-8") as f:
        f.write("ru 60 собаку\n")
    with pytest.raises(AssertionError, match="prepared again"):
        make_train_data(cfg, global_batch_size=8)


# ---------------------------------------------------------------------------------------------------------------
# Input state
# ---------------------------------------------------------------------------------------------------------------
def test_an_old_input_state_is_refused_by_name(corpus, prepared, tmp_path):
    cfg = config(corpus, prepared_dir=str(prepared[0]))
    data = make_train_data(cfg, global_batch_size=4, seed=0)
    next(data)
    data.save(str(tmp_path / "state"))
    (path,) = (tmp_path / "state").iterdir()
    state = json.loads(path.read_text())
    assert state["format"] == STATE_FORMAT == "xlmp-grain-index-2" and state["iterator"] == {"next_index": 1}
    path.write_text(json.dumps(dict(state, format="xlmp-grain-index-1")))  # the per-host token cache's rows
    resumed = make_train_data(cfg, global_batch_size=4, seed=0)
    with pytest.raises(
        LegacyDataStateError, match=r"format 'xlmp-grain-index-1', not 'xlmp-grain-index-2'\) cannot be continued"
    ):
        resumed.restore(str(tmp_path / "state"))
    assert resumed.batches_seen == 0  # nothing restored


# ---------------------------------------------------------------------------------------------------------------
# Eval masks
# ---------------------------------------------------------------------------------------------------------------
def _language_rows(cfg, lang, split, languages=None, rows_per_language=0):
    """The real rows of `lang` in an eval over `languages`, key by key."""
    batches = list(EvalData(cfg, batch_size=16, split=split, languages=languages, rows_per_language=rows_per_language))
    lid = EvalData(cfg, batch_size=16, split=split, languages=None).languages.index(lang)
    keep = [(b["language"] == lid) & b["attention_mask"].any(1) for b in batches]
    return {k: np.concatenate([b[k][m] for b, m in zip(batches, keep, strict=True)]) for k in BATCH_KEYS}


@pytest.mark.parametrize("split", ["validation", "train"])  # train: ~300 English rows, several mask blocks
def test_eval_masks_depend_only_on_the_language_and_the_row(corpus, prepared, split):
    cfg = config(corpus, prepared_dir=str(prepared[0]))
    for lang in ("en", "ru"):
        every = _language_rows(cfg, lang, split)
        n = len(every["input_ids"])
        # every row with a token to predict has a prediction (a row `<s></s>`, the end of a line cut at a row's
        # length, has none)
        np.testing.assert_array_equal(every["weights"].sum(1) >= 1, every["attention_mask"].sum(1) > 2)
        for languages, per in ((None, 0), ([lang], 0), (["ru", lang] if lang == "en" else [lang, "fr"], 0),
                               (None, 1), ([lang], 5), (None, 64), ([lang], 70), (None, n + 10)):  # fmt: skip
            got = _language_rows(cfg, lang, split, languages, per)
            m = min(per, n) if per else n
            for k in ("input_ids", "targets", "weights", "positions", "attention_mask"):
                np.testing.assert_array_equal(got[k], every[k][:m], err_msg=f"{lang} {languages} {per} {k}")


def test_eval_masks_follow_the_documented_seed(corpus, prepared):
    """Rows in blocks of 64, block b of language l masked by default_rng([1234, l, b]) with the training masker."""
    cfg = config(corpus, prepared_dir=str(prepared[0]))
    vocab = XLMRVocabulary(corpus[1])
    data = open_prepared(cfg)
    rows = data.rows("en", "train")
    assert len(rows) > 128
    ids, _, _ = row_arrays(rows.get(range(64, 128)), 32, vocab.pad_id)
    want = NumpyMasker(DataConfig.of(cfg), vocab)(ids, np.random.default_rng([1234, 0, 1]))
    got = _language_rows(cfg, "en", "train", ["en"], 128)
    for k in ("input_ids", "targets", "weights"):
        np.testing.assert_array_equal(got[k][64:128], want[k])


# ---------------------------------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_prepare_cli_writes_what_a_run_opens(tmp_path):
    out = tmp_path / "prepared"
    args = ["--config=configs/tiny.py", f"--out={out}", "--config.data.languages=('en','fr')",
            "--config.data.seq_length=32", "--unit_lines=1000"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, "-m", "data_pipelines.prepare", *args], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"prepared 2 language entries into .*: \d+ train rows", proc.stdout), proc.stdout
    cfg = default_data_config()
    cfg.update(languages=("en", "fr"), seq_length=32, prepared_dir=str(out))
    data = make_train_data(cfg, global_batch_size=4)
    assert data.languages == ["en", "fr"] and next(data)["input_ids"].shape == (4, 32)
    usage = subprocess.run(
        [sys.executable, "-m", "data_pipelines.prepare", "--config=configs/tiny.py"], cwd=REPO, env=env,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert usage.returncode == 2 and "usage: python -m data_pipelines.prepare" in usage.stdout
