"""data_pipelines/data_checks.py on good inputs: what the readers accept, it accepts (its errors: test_bad_inputs)."""

import gzip
import lzma

import pytest

from data_pipelines import data_checks
from data_pipelines.sources import local_files
from xlmp_jax import config_utils


def _config(*overrides):
    return config_utils.load_run("configs/tiny.py", overrides)


def test_the_shipped_configs_data_passes():
    data_checks.check_run_data(_config())


def test_vocabulary_size_equals_the_pipelines_vocabulary(sample_vocab):
    assert data_checks.vocabulary_size(sample_vocab.spm_model_path) == sample_vocab.vocab_size
    assert data_checks.vocabulary_size("gs://bucket/sentencepiece.bpe.model") is None  # left to the reader


def test_a_text_folder_of_every_compression_passes_and_its_languages_are_found(tmp_path):
    (tmp_path / "en.txt").write_text("hello\nworld\n", encoding="utf-8")
    (tmp_path / "de.txt.gz").write_bytes(gzip.compress("grüße\n".encode()))
    (tmp_path / "fr.txt.xz").write_bytes(lzma.compress("\ncafé\n".encode()))  # a blank first line is UTF-8 too
    (tmp_path / "notes.md").write_text("not a language file")
    config = _config("data.source=text", f"data.path={tmp_path}", "data.languages=()")
    assert local_files.preflight_languages(config.data) == ["de", "en", "fr"]
    data_checks.check_run_data(config)


def test_a_jsonl_source_passes_from_its_first_non_blank_record(tmp_path):
    (tmp_path / "en.jsonl").write_text('\n\n{"text": "hello", "url": "x"}\nnot json\n', encoding="utf-8")
    data_checks.check_run_data(_config("data.source=jsonl", f"data.path={tmp_path}", "data.languages=('en',)"))


def test_a_lang_pattern_finds_its_files(tmp_path):
    (tmp_path / "cc-en-00.txt").write_text("one\n")
    config = _config("data.source=cc100", f"data.path={tmp_path}/cc-{{lang}}-*.txt", "data.languages=('en',)")
    assert local_files.preflight_files(config.data, "en") == [str(tmp_path / "cc-en-00.txt")]
    data_checks.check_run_data(config)


def test_a_first_line_cut_inside_a_character_is_not_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(data_checks, "_FIRST_RECORD_LIMIT", 4)
    path = tmp_path / "en.txt"
    path.write_bytes("abcé and more\n".encode())  # the limit falls between the two bytes of é
    data_checks.check_text_file(str(path))
    path.write_bytes(b"ab\xe9 and more\n")  # a Latin-1 byte inside the limit still fails
    with pytest.raises(data_checks.DataPreflightError, match=r"en\.txt:1: not UTF-8"):
        data_checks.check_text_file(str(path))
