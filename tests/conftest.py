"""Test setup: 8 simulated CPU devices, set before JAX initialises (multi-device code is tested on CPU), JAX's
persistent compilation cache and the temp folder (the default prepared-data cache, Beam's job folders) in
folders of this test run, removed when it ends: a test run writes nothing into the user's home or a shared cache."""

import atexit
import os
import shutil
import tempfile

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # TensorFlow must not grab a GPU in tests
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The configs' compilation cache is ~/.cache/xlmp/jax; the environment variable wins over it (compile_cache.py).
# Set once by the first process (pytest-xdist's workers inherit it), removed when that process exits.
if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    _CACHE = tempfile.mkdtemp(prefix="xlmp-tests-jax-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
    atexit.register(shutil.rmtree, _CACHE, True)
if not os.environ.get("XLMP_TESTS_TMPDIR"):
    _TMP = tempfile.mkdtemp(prefix="xlmp-tests-tmp-")
    os.environ["XLMP_TESTS_TMPDIR"] = os.environ["TMPDIR"] = _TMP  # subprocesses and xdist workers inherit it
    atexit.register(shutil.rmtree, _TMP, True)
tempfile.tempdir = os.environ["XLMP_TESTS_TMPDIR"]


import pytest  # noqa: E402
from helpers import REPO  # noqa: E402

SAMPLE_VOCAB = REPO / "data_pipelines" / "sample_vocab" / "sentencepiece.bpe.model"


@pytest.fixture(scope="session")
def sample_vocab():
    """The vocabulary that ships with the project (XLM-R id layout)."""
    from data_pipelines.vocab import XLMRVocabulary

    return XLMRVocabulary(str(SAMPLE_VOCAB))
