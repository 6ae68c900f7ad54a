"""Test setup: 8 simulated CPU devices, set before JAX initialises (multi-device code is tested on CPU), JAX's
persistent compilation cache, the temp folder (the default prepared-data cache, Beam's job folders), the XDG
cache and matplotlib's config folder in folders of this test run, removed when it ends: a test run writes
nothing into the user's home or a shared cache. The run fails if the user's cache folder gains an entry."""

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
    # The user's cache folder, as it was before this run pointed XDG_CACHE_HOME elsewhere (checked at the end).
    os.environ["XLMP_TESTS_USER_CACHE"] = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    _TMP = tempfile.mkdtemp(prefix="xlmp-tests-tmp-")
    os.environ["XLMP_TESTS_TMPDIR"] = os.environ["TMPDIR"] = _TMP  # subprocesses and xdist workers inherit it
    os.environ["XDG_CACHE_HOME"] = os.path.join(_TMP, "xdg-cache")
    os.environ["MPLCONFIGDIR"] = os.path.join(_TMP, "matplotlib")
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


_USER_CACHE = pytest.StashKey[set]()


def _entries(root: str) -> set[str]:
    """Every file and folder under ``root``, relative to it (none if it does not exist)."""
    found = set()
    for folder, dirs, files in os.walk(root):
        rel = os.path.relpath(folder, root)
        found.update(os.path.normpath(os.path.join(rel, name)) for name in dirs + files)
    return found


def pytest_sessionstart(session):
    if not hasattr(session.config, "workerinput"):  # the controller (not an xdist worker) sees the whole run
        session.config.stash[_USER_CACHE] = _entries(os.environ["XLMP_TESTS_USER_CACHE"])


def pytest_sessionfinish(session, exitstatus):
    before = session.config.stash.get(_USER_CACHE, None)
    if before is None:
        return
    root = os.environ["XLMP_TESTS_USER_CACHE"]
    added = sorted(_entries(root) - before)
    if added:
        shown = ", ".join(added[:10]) + (f" and {len(added) - 10} more" if len(added) > 10 else "")
        print(f"\nthe test run wrote into the user's cache folder {root}: {shown}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
