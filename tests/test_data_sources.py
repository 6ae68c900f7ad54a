"""Data sources of the SeqIO tasks (local text/CC-100/.gz/.xz/jsonl/TFRecord, TFDS mC4 and Wiki-40B stand-ins in
TFDS's own on-disk format, a non-local gfile path) and the errors for bad input."""

from __future__ import annotations

import gzip
import json
import lzma

import pytest
import seqio
import tensorflow as tf
from test_data_fixtures import make_corpus, train_spm

from data_pipelines import sources, tasks
from data_pipelines.config import DataConfig, default_data_config
from data_pipelines.eval_data import make_eval_data
from data_pipelines.input_pipeline import make_train_data

DOCS = {
    "en": ["the quick brown fox jumps\nover the lazy dog", "seven cats watch quietly\nfrom home", "a dog runs"],
    "fr": ["le chat noir saute\nsur la table", "un chien blanc", "nous mangeons\navec un chien"],
}


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("c"))
    make_corpus(root)
    return train_spm(root, str(tmp_path_factory.mktemp("spm") / "m"))


def config(spm_model, **kw):
    cfg = default_data_config()
    cfg.vocab_path = spm_model
    cfg.seq_length = 32
    cfg.shuffle_buffer = 0
    cfg.update(kw)
    return cfg


def decoded_rows(cfg, split="train", lang=None):
    """Text of every row of a task (no shuffling, one epoch), masks ignored."""
    spec = tasks.mixture_spec(cfg)
    i = spec.languages.index(lang or spec.languages[0])
    task = seqio.get_mixture_or_task(spec.task_names[i])
    ds = task.get_dataset(sequence_length=None, split=split, shuffle=False, num_epochs=1, try_in_mem_cache=False)
    return [_text(spec.vocab, r["input_ids"]) for r in ds.as_numpy_iterator()]


def _text(vocab, ids) -> str:
    return vocab.decode([i for i in ids.tolist() if i > 2])  # lines joined (seqio's decode stops at </s>)


def write_docs(path: str, docs: list[str], opener=open):
    with opener(path, "wt", encoding="utf-8") as f:
        for d in docs * 10:
            f.write(d + "\n\n")


# ---------------------------------------------------------------------------------------------------------------
# 2. sources
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ext,opener", [(".txt.gz", gzip.open), (".txt.xz", lzma.open)])
def test_cc100_compressed_files(spm_model, tmp_path, ext, opener):
    for lang, docs in DOCS.items():
        write_docs(str(tmp_path / f"{lang}{ext}"), docs, opener)
    cfg = config(
        spm_model, source="cc100", path=str(tmp_path), packing="complete_doc", decompress_dir=str(tmp_path / "x")
    )
    spec = tasks.mixture_spec(cfg)
    assert spec.languages == ("en", "fr")
    rows = decoded_rows(cfg, lang="fr")
    # complete_doc: one row per document, its lines in order
    assert rows[:3] == ["le chat noir saute sur la table", "un chien blanc", "nous mangeons avec un chien"]


def test_jsonl_source(spm_model, tmp_path):
    for lang, docs in DOCS.items():
        with open(tmp_path / f"{lang}.jsonl", "w", encoding="utf-8") as f:
            for d in docs * 10:
                f.write(json.dumps({"body": d, "id": 1}) + "\n")
    cfg = config(
        spm_model, source="jsonl", path=str(tmp_path), text_field="body", packing="complete_doc",
        decompress_dir=str(tmp_path / "x"),
    )  # fmt: skip
    assert decoded_rows(cfg, lang="en")[:2] == [
        "the quick brown fox jumps over the lazy dog",
        "seven cats watch quietly from home",
    ]


def test_tfrecord_source_with_lang_pattern(spm_model, tmp_path):
    for lang, docs in DOCS.items():
        for split, n in (("train", 10), ("validation", 1)):
            with tf.io.TFRecordWriter(str(tmp_path / f"{lang}-{split}.tfrecord-00000-of-00001")) as w:
                for d in docs * n:
                    feat = {"content": tf.train.Feature(bytes_list=tf.train.BytesList(value=[d.encode()]))}
                    w.write(tf.train.Example(features=tf.train.Features(feature=feat)).SerializeToString())
    cfg = config(spm_model, source="tfrecord", path=str(tmp_path / "{lang}-{split}.tfrecord*"), text_field="content")
    cfg.languages = ("en", "fr")
    spec = tasks.mixture_spec(cfg)
    assert spec.sizes == {"en": 30.0, "fr": 30.0}
    rows = decoded_rows(cfg, split="validation", lang="en")
    # "complete": lines of consecutive documents share a row while they fit
    assert rows[0].startswith("the quick brown fox jumps over the lazy dog seven cats")


def test_non_local_gfile_path(spm_model):
    """Paths go through tf.io.gfile: TF's in-memory file system stands in for gs:// here."""
    root = "ram://xlmp_test_corpus"
    tf.io.gfile.makedirs(root)
    for lang, docs in DOCS.items():
        with tf.io.gfile.GFile(f"{root}/{lang}.txt", "w") as f:
            f.write("\n".join(d.replace("\n", " ") for d in docs * 10) + "\n")
    cfg = config(spm_model, source="text", path=root, packing="none")
    rows = decoded_rows(cfg, lang="en")
    assert rows[:2] == ["the quick brown fox jumps over the lazy dog", "seven cats watch quietly from home"]
    data = make_train_data(cfg, global_batch_size=4)
    assert next(data)["input_ids"].shape == (4, 32)


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    """mC4 and Wiki-40B stand-ins written by TFDS itself (dataset_info.json + TFRecord shards), no download."""
    import tensorflow_datasets as tfds

    d = str(tmp_path_factory.mktemp("tfds"))
    c4_features = tfds.features.FeaturesDict(
        {"text": tfds.features.Text(), "url": tfds.features.Text(), "timestamp": tfds.features.Text()}
    )

    def c4(docs, n):
        docs = docs * n
        return tf.data.Dataset.from_tensor_slices(
            {"text": docs, "url": ["u"] * len(docs), "timestamp": ["t"] * len(docs)}
        )

    tfds.dataset_builders.store_as_tfds_dataset(
        name="c4", version="3.1.0", config="multilingual", features=c4_features, data_dir=d,
        split_datasets={"en": c4(DOCS["en"], 20), "en-validation": c4(DOCS["en"], 1),
                        "fr": c4(DOCS["fr"], 4), "fr-validation": c4(DOCS["fr"], 1)},
    )  # fmt: skip
    wiki_features = tfds.features.FeaturesDict(
        {"text": tfds.features.Text(), "wikidata_id": tfds.features.Text(), "version_id": tfds.features.Text()}
    )
    for lang, docs in DOCS.items():
        articles = [
            f"\n_START_ARTICLE_\ntitle {i}\n_START_PARAGRAPH_\n" + d.replace("\n", "_NEWLINE_")
            for i, d in enumerate(docs)
        ]

        def wiki(n, articles=articles):
            a = articles * n
            return tf.data.Dataset.from_tensor_slices(
                {"text": a, "wikidata_id": ["Q"] * len(a), "version_id": ["1"] * len(a)}
            )

        tfds.dataset_builders.store_as_tfds_dataset(
            name="wiki40b", version="1.3.0", config=lang, features=wiki_features, data_dir=d,
            split_datasets={"train": wiki(5), "validation": wiki(1), "test": wiki(1)},
        )  # fmt: skip
    return d


def test_mc4_tfds_task(spm_model, tfds_dir):
    cfg = config(spm_model, source="mc4", tfds_data_dir=tfds_dir, languages=("en", "fr"), packing="complete_doc")
    spec = tasks.mixture_spec(cfg)
    assert spec.sizes == {"en": 60.0, "fr": 12.0}  # num_examples from dataset_info.json
    z = 60**0.3 + 12**0.3
    assert spec.rates["fr"] == pytest.approx(12**0.3 / z)
    assert sorted(decoded_rows(cfg, split="validation", lang="fr")) == sorted(d.replace("\n", " ") for d in DOCS["fr"])
    batch = next(make_train_data(cfg, global_batch_size=8, process_index=0, process_count=2))
    assert batch["input_ids"].shape == (4, 32)
    with pytest.raises(ValueError, match=r"'xx'.*no split 'xx'"):
        tasks.mixture_spec(config(spm_model, source="mc4", tfds_data_dir=tfds_dir, languages=("en", "xx")))


def test_wiki40b_tfds_task(spm_model, tfds_dir):
    cfg = config(spm_model, source="wiki40b", tfds_data_dir=tfds_dir, languages=("en", "fr"), packing="complete_doc")
    assert tasks.mixture_spec(cfg).sizes == {"en": 15.0, "fr": 15.0}
    rows = sorted(decoded_rows(cfg, split="validation", lang="en"))
    assert rows == sorted(f"title {i} " + d.replace("\n", " ") for i, d in enumerate(DOCS["en"]))  # markers gone
    with pytest.raises(ValueError, match=r"'de'.*wiki40b/de"):
        tasks.mixture_spec(config(spm_model, source="wiki40b", tfds_data_dir=tfds_dir, languages=("de",)))


# ---------------------------------------------------------------------------------------------------------------
# 6. bad input
# ---------------------------------------------------------------------------------------------------------------
def test_bad_inputs_name_the_value(spm_model, tmp_path):
    (tmp_path / "en.txt").write_text("a dog\n" * 20, encoding="utf-8")
    with pytest.raises(FileNotFoundError, match=r"data\.path='/nonexistent/x'"):
        tasks.mixture_spec(config(spm_model, source="text", path="/nonexistent/x"))
    with pytest.raises(FileNotFoundError, match=r"data\.languages entry 'zz'"):
        tasks.mixture_spec(config(spm_model, source="text", path=str(tmp_path), languages=("en", "zz")))
    (tmp_path / "fr.txt").write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match=r"empty input file: '.*fr\.txt'"):
        tasks.mixture_spec(config(spm_model, source="text", path=str(tmp_path), languages=("fr",)))
    empty = tmp_path / "nothing"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"data\.languages=\(\) gives an empty mixture"):
        tasks.mixture_spec(config(spm_model, source="text", path=str(empty)))
    with pytest.raises(ValueError, match=r"languages=\['de'\] not in"):
        make_eval_data(
            config(spm_model, source="text", path=str(tmp_path), languages=("en",)), batch_size=2, languages=["de"]
        )
    with pytest.raises(ValueError, match=r"global_batch_size=6 is not divisible by process_count=4"):
        make_train_data(
            config(spm_model, source="text", path=str(tmp_path), languages=("en",)),
            global_batch_size=6,
            process_count=4,
        )


def test_undecodable_lines_skipped_in_eval_and_named_in_training(spm_model, tmp_path):
    good = [f"the dog {i} runs" for i in range(40)]
    with open(tmp_path / "en.txt", "wb") as f:
        for i, line in enumerate(good):
            f.write(line.encode() + b"\n")
            if i in (3, 11, 20):
                f.write(b"bad \xff\xfe bytes \xc3\n")
    cfg = config(spm_model, source="text", path=str(tmp_path), packing="none", seq_length=16)
    spec = tasks.mixture_spec(cfg)
    task = seqio.get_mixture_or_task(spec.task_names[0])
    rows = list(
        task.get_dataset(None, split="train", shuffle=False, num_epochs=1, try_in_mem_cache=False).as_numpy_iterator()
    )
    texts = [_text(spec.vocab, r["input_ids"]) for r in rows]
    n_train = len(texts)
    assert texts == good[:n_train]  # the bad lines are gone, nothing else
    assert sum(int(r["stat_bad"]) for r in rows) == 3
    # training tokenises the file once and stops at the first bad line, naming it (line 5: after 4 good ones)
    with pytest.raises(ValueError, match=r"en\.txt:5: not valid UTF-8"):
        make_train_data(cfg, global_batch_size=n_train)


def test_text_source_shards_by_file_when_it_can(tmp_path):
    for name in ("a", "b", "c"):
        (tmp_path / f"{name}.txt").write_text("".join(f"{name} {i}\n" for i in range(20)), encoding="utf-8")
    files = [str(tmp_path / f"{n}.txt") for n in ("a", "b", "c")]
    src = sources.TextLinesSource(files)
    assert src.num_input_examples("train") == 54 and src.num_input_examples("validation") == 6

    def lines(shard, split="train"):
        return [x["text"].decode() for x in src.get_dataset(split, shard_info=shard).as_numpy_iterator()]

    # 3 files, 2 shards: whole files (a, c) and (b)
    assert lines(seqio.ShardInfo(0, 2)) == [f"a {i}" for i in range(18)] + [f"c {i}" for i in range(18)]
    assert lines(seqio.ShardInfo(1, 2)) == [f"b {i}" for i in range(18)]
    # 3 files, 4 shards: contiguous ranges of every file, disjoint, covering the split
    parts = [lines(seqio.ShardInfo(i, 4), "validation") for i in range(4)]
    assert sorted(sum(parts, [])) == sorted(lines(None, "validation")) and sum(map(len, parts)) == 6


def test_parallel_jsonl_pairs(spm_model, tmp_path):
    par = tmp_path / "par"
    par.mkdir()
    with open(par / "en-de.jsonl", "w", encoding="utf-8") as f:
        for i in range(30):
            f.write(json.dumps({"en": f"the dog {i}", "de": f"der hund\t{i}"}) + "\n")
        f.write("{not json\n")
    cfg = config(spm_model, source="text", path=str(tmp_path), tlm_rate=0.2, parallel_path=str(par))
    cfg.decompress_dir = str(tmp_path / "x")
    cfg = DataConfig.from_section(cfg)
    assert sources.parallel_languages(cfg) == ["de"]
    spec = sources.parallel_source(cfg, "de")
    lines = [x["text"] for x in spec.source.get_dataset("train", shuffle=False).as_numpy_iterator()]
    assert lines[0] == b"the dog 0\tder hund 0"  # tabs inside a side become spaces
    assert spec.size == 27  # 31 lines (the unparsable one kept as an undecodable line): 31 - ceil(3.1)
