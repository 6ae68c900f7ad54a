"""Test setup: 8 simulated CPU devices, set before JAX initialises (multi-device code is tested on CPU), and JAX's
persistent compilation cache in a temporary folder (a test run writes nothing into the user's home)."""

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


import pytest  # noqa: E402
from helpers import REPO  # noqa: E402

SAMPLE_VOCAB = REPO / "data_pipelines" / "sample_vocab" / "sentencepiece.bpe.model"


@pytest.fixture(scope="session")
def sample_vocab():
    """The vocabulary that ships with the project (XLM-R id layout)."""
    from data_pipelines.vocab import XLMRVocabulary

    return XLMRVocabulary(str(SAMPLE_VOCAB))
