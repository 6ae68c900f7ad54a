"""Data sources, read through the prepare pipeline (`prepare.prepare` into ArrayRecord shards, then the rows or
batches read back): local text/CC-100/.gz/.xz/jsonl/TFRecord, TFDS mC4 and Wiki-40B stand-ins in TFDS's own
on-disk format, a non-local gfile path; the line sources' held-out rule and pairs (`line_sources`); the errors
for bad input."""

from __future__ import annotations

import gzip
import json
import lzma

import pytest
import tensorflow as tf
from test_data_fixtures import make_corpus, train_spm

from data_pipelines import dataset, line_sources, packing, prepare
from data_pipelines.config import DataConfig, default_data_config
from data_pipelines.eval_data import make_eval_data
from data_pipelines.input_pipeline import make_train_data
from data_pipelines.vocab import XLMRVocabulary

DOCS = {
    "en": ["the quick brown fox jumps\nover the lazy dog", "seven cats watch quietly\nfrom home", "a dog runs"],
    "fr": ["le chat noir saute\nsur la table", "un chien blanc", "nous mangeons\navec un chien"],
}


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("c"))
    make_corpus(root)
    return train_spm(root, str(tmp_path_factory.mktemp("spm") / "m"))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """`data.decompress_dir` of the module's configs: the prepared rows, keyed by their inputs."""
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture
def config(spm_model, cache):
    def make(**kw):
        cfg = default_data_config()
        cfg.vocab_path = spm_model
        cfg.seq_length = 32
        cfg.shuffle_buffer = 0
        cfg.decompress_dir = cache
        cfg.update(kw)
        return cfg

    return make


def open_prepared(cfg) -> dataset.PreparedData:
    """The config's prepared data (prepared first, in-process with Beam's DirectRunner, when absent)."""
    cfg = DataConfig.of(cfg)
    return dataset.open_prepared(cfg, prepare.vocab_sha256(cfg.vocab_path))


def decoded_rows(cfg, split="train", lang=None):
    """Text of every prepared row of a language's split, in order."""
    data = open_prepared(cfg)
    rows = data.rows(lang or data.mixture.languages[0], split)
    vocab = XLMRVocabulary(DataConfig.of(cfg).vocab_path)
    return [_text(vocab, ids) for ids, _, _ in rows.get(range(len(rows)))]


def _text(vocab, ids) -> str:
    return vocab.decode([i for i in ids.tolist() if i > 2])  # lines joined


def write_docs(path: str, docs: list[str], opener=open):
    with opener(path, "wt", encoding="utf-8") as f:
        for d in docs * 10:
            f.write(d + "\n\n")


# ---------------------------------------------------------------------------------------------------------------
# 2. sources
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ext,opener", [(".txt.gz", gzip.open), (".txt.xz", lzma.open)])
def test_cc100_compressed_files(config, tmp_path, ext, opener):
    for lang, docs in DOCS.items():
        write_docs(str(tmp_path / f"{lang}{ext}"), docs, opener)
    cfg = config(source="cc100", path=str(tmp_path), packing="complete_doc")
    assert open_prepared(cfg).mixture.languages == ("en", "fr")
    rows = decoded_rows(cfg, lang="fr")
    # complete_doc: one row per document, its lines in order
    assert rows[:3] == ["le chat noir saute sur la table", "un chien blanc", "nous mangeons avec un chien"]


def test_jsonl_source(config, tmp_path):
    for lang, docs in DOCS.items():
        with open(tmp_path / f"{lang}.jsonl", "w", encoding="utf-8") as f:
            for d in docs * 10:
                f.write(json.dumps({"body": d, "id": 1}) + "\n")
    cfg = config(source="jsonl", path=str(tmp_path), text_field="body", packing="complete_doc")
    assert decoded_rows(cfg, lang="en")[:2] == [
        "the quick brown fox jumps over the lazy dog",
        "seven cats watch quietly from home",
    ]


def test_tfrecord_source_with_lang_pattern(config, tmp_path):
    for lang, docs in DOCS.items():
        for split, n in (("train", 10), ("validation", 1)):
            with tf.io.TFRecordWriter(str(tmp_path / f"{lang}-{split}.tfrecord-00000-of-00001")) as w:
                for d in docs * n:
                    feat = {"content": tf.train.Feature(bytes_list=tf.train.BytesList(value=[d.encode()]))}
                    w.write(tf.train.Example(features=tf.train.Features(feature=feat)).SerializeToString())
    cfg = config(source="tfrecord", path=str(tmp_path / "{lang}-{split}.tfrecord*"), text_field="content")
    cfg.languages = ("en", "fr")
    assert open_prepared(cfg).mixture.sizes == {"en": 30.0, "fr": 30.0}  # documents of the train split
    rows = decoded_rows(cfg, split="validation", lang="en")
    # "complete": lines of consecutive documents share a row while they fit
    assert rows[0].startswith("the quick brown fox jumps over the lazy dog seven cats")


def test_non_local_gfile_path(config):
    """Paths go through tf.io.gfile: TF's in-memory file system stands in for gs:// here."""
    root = "ram://xlmp_test_corpus"
    tf.io.gfile.makedirs(root)
    for lang, docs in DOCS.items():
        with tf.io.gfile.GFile(f"{root}/{lang}.txt", "w") as f:
            f.write("\n".join(d.replace("\n", " ") for d in docs * 10) + "\n")
    cfg = config(source="text", path=root, packing="none")
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


def test_mc4_tfds_source(config, tfds_dir):
    cfg = config(source="mc4", tfds_data_dir=tfds_dir, languages=("en", "fr"), packing="complete_doc")
    mixture = open_prepared(cfg).mixture
    assert mixture.sizes == {"en": 60.0, "fr": 12.0}  # documents of the train split
    z = 60**0.3 + 12**0.3
    assert mixture.rates["fr"] == pytest.approx(12**0.3 / z)
    assert sorted(decoded_rows(cfg, split="validation", lang="fr")) == sorted(d.replace("\n", " ") for d in DOCS["fr"])
    batch = next(make_train_data(cfg, global_batch_size=8, process_index=0, process_count=2))
    assert batch["input_ids"].shape == (4, 32)
    with pytest.raises(
        ValueError, match=r"data\.languages entry 'xx': TFDS 'c4/multilingual:3\.1\.0' has no split 'xx'"
    ):
        open_prepared(config(source="mc4", tfds_data_dir=tfds_dir, languages=("en", "xx")))


def test_wiki40b_tfds_source(config, tfds_dir):
    cfg = config(source="wiki40b", tfds_data_dir=tfds_dir, languages=("en", "fr"), packing="complete_doc")
    assert open_prepared(cfg).mixture.sizes == {"en": 15.0, "fr": 15.0}
    rows = sorted(decoded_rows(cfg, split="validation", lang="en"))
    assert rows == sorted(f"title {i} " + d.replace("\n", " ") for i, d in enumerate(DOCS["en"]))  # markers gone
    with pytest.raises(ValueError, match=r"data\.languages entry 'de': TFDS 'wiki40b/de:1\.3\.0'"):
        open_prepared(config(source="wiki40b", tfds_data_dir=tfds_dir, languages=("de",)))


# ---------------------------------------------------------------------------------------------------------------
# 6. bad input
# ---------------------------------------------------------------------------------------------------------------
def test_bad_inputs_name_the_value(config, tmp_path):
    (tmp_path / "en.txt").write_text("a dog\n" * 20, encoding="utf-8")
    with pytest.raises(FileNotFoundError, match=r"data\.path='/nonexistent/x'"):
        line_sources.inputs(DataConfig.of(config(source="text", path="/nonexistent/x")))
    with pytest.raises(FileNotFoundError, match=r"data\.languages entry 'zz'"):
        line_sources.inputs(DataConfig.of(config(source="text", path=str(tmp_path), languages=("en", "zz"))))
    (tmp_path / "fr.txt").write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match=r"empty input file: '.*fr\.txt'"):
        make_train_data(config(source="text", path=str(tmp_path), languages=("fr",)), global_batch_size=2)
    empty = tmp_path / "nothing"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"data\.languages=\(\) gives an empty mixture"):
        line_sources.inputs(DataConfig.of(config(source="text", path=str(empty))))
    with pytest.raises(ValueError, match=r"languages=\['de'\] not in"):
        make_eval_data(config(source="text", path=str(tmp_path), languages=("en",)), batch_size=2, languages=["de"])
    with pytest.raises(ValueError, match=r"global_batch_size=6 is not divisible by process_count=4"):
        make_train_data(
            config(source="text", path=str(tmp_path), languages=("en",)),
            global_batch_size=6,
            process_count=4,
        )


@pytest.mark.parametrize("split", ["train", "validation"])
def test_an_undecodable_line_fails_the_prepare_naming_it(config, tmp_path, split):
    """Training and eval alike: the prepare stops at a line that is not UTF-8, naming the file and the line
    (eval no longer skips such lines), and leaves no manifest behind."""
    good = [f"the dog {i} runs" for i in range(40)]
    bad_after = 3 if split == "train" else 38  # 42 lines: the last ceil(4.2) = 5 (38-42) are held out
    with open(tmp_path / "en.txt", "wb") as f:
        for i, line in enumerate(good):
            f.write(line.encode() + b"\n")
            if i in (bad_after, bad_after + 1):
                f.write(b"bad \xff\xfe bytes \xc3\n")
    out = tmp_path / "prepared"
    cfg = config(source="text", path=str(tmp_path), packing="none", seq_length=16, prepared_dir=str(out))
    call = (lambda: make_train_data(cfg, global_batch_size=4)) if split == "train" else (lambda: make_eval_data(cfg, batch_size=4))  # fmt: skip
    with pytest.raises(packing.ContentError, match=rf"en\.txt:{bad_after + 2}: not valid UTF-8 \(byte 4"):
        call()
    assert not (out / "manifest.json").exists()


def test_text_source_holds_out_the_end_of_each_file(config, tmp_path):
    for name in ("a", "b", "c"):
        (tmp_path / f"en-{name}.txt").write_text("".join(f"{name} {i}\n" for i in range(20)), encoding="utf-8")
    cfg = DataConfig.of(config(source="text", path=str(tmp_path / "{lang}-*.txt"), languages=("en",)))
    train, validation = line_sources.inputs(cfg)
    assert (train.split, validation.split) == ("train", "validation") and len(train.paths) == 3

    def lines(inp):
        return [line.decode() for _, line in line_sources.read_lines(inp)]

    # per file: its first 18 lines train, its last 2 are held out; files in name order
    assert lines(train) == [f"{n} {i}" for n in "abc" for i in range(18)]
    assert lines(validation) == [f"{n} {i}" for n in "abc" for i in (18, 19)]
    where = [w for w, _ in line_sources.read_lines(validation)]
    assert where[0].endswith("en-a.txt:19") and where[-1].endswith("en-c.txt:20")  # 1-based line numbers
    mixture = open_prepared(cfg).mixture
    assert mixture.sizes == {"en": 54.0}


def test_parallel_jsonl_pairs(config, tmp_path):
    par = tmp_path / "par"
    par.mkdir()
    with open(par / "en-de.jsonl", "w", encoding="utf-8") as f:
        for i in range(30):
            f.write(json.dumps({"en": f"the dog {i}", "de": f"der hund\t{i}"}) + "\n")
        f.write("{not json\n")
    (tmp_path / "en.txt").write_text("a dog\n" * 20, encoding="utf-8")
    cfg = DataConfig.of(config(source="text", path=str(tmp_path), tlm_rate=0.2, parallel_path=str(par)))
    assert line_sources.parallel_languages(cfg) == ["de"]
    pairs = [i for i in line_sources.inputs(cfg) if i.entry == "en-de"]
    assert [i.split for i in pairs] == ["train", "validation"] and pairs[0].kind == "pairs"
    train = [line for _, line in line_sources.read_lines(pairs[0])]
    assert train[0] == b"the dog 0\tder hund 0"  # tabs inside a side become spaces
    assert len(train) == 27  # 31 lines (the unparsable one kept as an undecodable line): 31 - ceil(3.1)
    # the unparsable line is the held-out split's last: the prepare stops there, naming it
    with pytest.raises(packing.ContentError, match=r"en-de\.jsonl \(as text lines\):31: not valid UTF-8"):
        open_prepared(cfg)
