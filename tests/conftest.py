"""Test setup: 8 simulated CPU devices, set before JAX initialises (multi-device code is tested on CPU)."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # TensorFlow must not grab a GPU in tests
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


import pytest  # noqa: E402
from helpers import REPO  # noqa: E402

SAMPLE_VOCAB = REPO / "data_pipelines" / "sample_vocab" / "sentencepiece.bpe.model"


@pytest.fixture(scope="session")
def sample_vocab():
    """The vocabulary that ships with the project (XLM-R id layout)."""
    from data_pipelines.vocab import XLMRVocabulary

    return XLMRVocabulary(str(SAMPLE_VOCAB))
