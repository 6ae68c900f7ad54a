"""The source registry (`data_pipelines.sources`): every kind resolves, an unknown kind fails by name, a kind
registered here alone reaches the config check, the inputs and the preflight, and the sample's inputs and
prepared-data cache key are the ones made before the registry (old token caches stay valid).

Each kind's own behaviour is tested where its data is read: tests/test_data_sources.py (the readers, through the
prepare), tests/test_data_checks.py and tests/test_bad_inputs.py (the start-up checks and their messages).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import types

import pytest
from helpers import REPO

from data_pipelines import config, data_checks, dataset, line_sources, sample, sources
from data_pipelines.config import DataConfig, default_data_config
from data_pipelines.line_sources import Input

INTERFACE = ("NAMES", "check_config", "languages", "mono_inputs", "preflight", "heldout_text_dir")


def _config(**fields):
    c = default_data_config()
    c.update(fields)
    return c


def test_every_configurable_kind_resolves_to_a_module_serving_it():
    assert config.SOURCES == sources.names() == ("sample", "text", "cc100", "jsonl", "tfrecord", "mc4", "wiki40b")
    for kind in config.SOURCES:
        module = sources.get(kind)
        assert kind in module.NAMES
        assert all(hasattr(module, name) for name in INTERFACE), kind


@pytest.mark.parametrize("module", sources.MODULES, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_each_module_names_a_data_field_when_it_rejects_a_config(module):
    fields = {f.name for f in dataclasses.fields(DataConfig)}
    for kind in module.NAMES:
        problem = module.check_config(_config(source=kind))
        assert problem is None or (problem[0] in fields and kind in problem[1]), (kind, problem)


def test_an_unknown_kind_fails_naming_it_and_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown data source 'mc5' \(known: sample, text, .*wiki40b\)"):
        sources.get("mc5")
    with pytest.raises(
        ValueError, match=re.escape(f"data.source='mc5': unknown source; expected one of {config.SOURCES}")
    ):
        DataConfig.of(_config(source="mc5"))


def test_a_kind_is_served_by_one_module_only():
    twin = types.SimpleNamespace(NAMES=("text",))
    with pytest.raises(ValueError, match="data source 'text' is served by two modules"):
        sources._registry((*sources.MODULES, twin))


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """A kind registered by this test alone: `<lang>.toy` files read as text, its preflight calls recorded."""
    calls = []

    def check_config(values):
        return None if values["path"] else ("path", "source 'toy' needs a folder")

    def languages(cfg):
        return sorted(p.name[: -len(".toy")] for p in pathlib.Path(cfg.path).glob("*.toy"))

    def mono_inputs(cfg, lang):
        paths = (os.path.join(cfg.path, f"{lang}.toy"),)
        return [Input(entry=lang, split=s, kind="lines", reader="text", paths=paths) for s in line_sources.SPLITS]

    module = types.SimpleNamespace(
        NAMES=("toy",), check_config=check_config, languages=languages, mono_inputs=mono_inputs,
        preflight=calls.append, heldout_text_dir=lambda cfg: None,
    )  # fmt: skip
    monkeypatch.setitem(sources.REGISTRY, "toy", module)
    (tmp_path / "xx.toy").write_text("".join(f"line {i}\n" for i in range(10)))
    return calls


def test_a_registered_kind_reaches_the_config_the_inputs_and_the_preflight(toy, tmp_path):
    with pytest.raises(ValueError, match=r"data\.path='': source 'toy' needs a folder"):
        DataConfig.of(_config(source="toy"))
    cfg = DataConfig.of(_config(source="toy", path=str(tmp_path)))
    assert line_sources.mono_languages(cfg) == ["xx"]
    train, validation = line_sources.inputs(cfg)
    assert (train.entry, train.split, validation.split) == ("xx", "train", "validation")
    assert [line for _, line in line_sources.read_lines(validation)] == [b"line 9"]
    data_checks.check_data(cfg)
    assert toy == [cfg]


def test_no_module_outside_the_registry_asks_which_kind_a_data_config_names():
    kinds = "|".join(config.SOURCES)
    source = r"(?:(?:data|cfg)\.source|\[[\"']source[\"']\])"  # data.source, cfg.source, v["source"]
    asks = re.compile(rf"{source}\s*(?:==|!=|in|not in)\s*[(\[]?\s*[\"']({kinds})[\"']")
    files = [p for folder in ("data_pipelines", "xlmp_jax", "bench", "launch") for p in (REPO / folder).glob("*.py")]
    found = [f"{p.relative_to(REPO)}: {m[0]}" for p in files for m in asks.finditer(p.read_text())]
    assert not found, f"ask data_pipelines.sources instead: {found}"


# What the sample's inputs were before the registry: their specs, fingerprints and the prepared-data cache folder
# (with each file's key reduced to its path under the sample, so the values do not depend on the checkout).
SAMPLE_INPUTS = [
    ("en", "train", "lines", "sample", ("en",)),
    ("en", "validation", "lines", "sample", ("en",)),
    ("de", "train", "lines", "sample", ("de",)),
    ("de", "validation", "lines", "sample", ("de",)),
    ("en-de", "train", "pairs", "sample_pairs", ("de",)),
    ("en-de", "validation", "pairs", "sample_pairs", ("de",)),
]
SAMPLE_FINGERPRINTS = [
    "a7f68bb62549cae9c336", "7f496b3d47aa21275e16", "cd4ca77a73d064b84ac9",
    "ddaf0c6c0b29dc06c161", "9e9119cc62820cc9dd26", "0afffe58dc35b733816b",
]  # fmt: skip
SAMPLE_CACHE_FOLDER = "0033d1ab223b1072fe8c"


def test_the_sample_keeps_its_inputs_and_prepared_cache_key(tmp_path, monkeypatch):
    monkeypatch.setattr(line_sources, "file_key", lambda path: os.path.relpath(path, sample.SAMPLE_DIR))
    cfg = DataConfig.of(
        _config(languages=("en", "de"), tlm_rate=0.5, parallel_languages=("de",), decompress_dir=str(tmp_path))
    )
    inputs = line_sources.inputs(cfg)
    assert inputs == [Input(*spec) for spec in SAMPLE_INPUTS]
    assert [line_sources.fingerprint(i) for i in inputs] == SAMPLE_FINGERPRINTS
    folder = dataset.default_dir(cfg, "0" * 64)
    assert os.path.basename(folder) == SAMPLE_CACHE_FOLDER, "the sample's prepared-data cache key moved"


def test_the_pool_report_reads_the_sample_or_a_local_text_folder_only(tmp_path):
    # What xlmp_jax.train's pool report asked of data.source before the registry.
    def text_dir(**fields):
        cfg = DataConfig.of(_config(**fields))
        return sources.get(cfg.source).heldout_text_dir(cfg)

    assert text_dir() == ""
    assert text_dir(source="text", path=str(tmp_path)) == str(tmp_path)
    assert text_dir(source="text", path=str(tmp_path / "{lang}.txt")) is None
    assert text_dir(source="cc100", path=str(tmp_path)) is None
    assert text_dir(source="jsonl", path=str(tmp_path)) is None
    assert text_dir(source="tfrecord", path=str(tmp_path)) is None
    assert text_dir(source="mc4", languages=("en",)) is None
