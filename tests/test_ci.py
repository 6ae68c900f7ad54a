"""`.ci/run` against stub environments: which venv it uses, and that it never deletes a developer's own `.venv`.

The cached venv is faked (its python, pip and ruff only log their arguments), so nothing is installed or run.
"""

import hashlib
import os
import shutil
import subprocess

import pytest
from helpers import REPO

STUB = '#!/usr/bin/env bash\necho "$(basename "$0") $*" >> "$CI_LOG"\n'


def _checkout(tmp_path):
    """A copy of what `.ci/run` reads, and a CI cache holding a complete stub venv for it."""
    repo = tmp_path / "repo"
    (repo / ".ci").mkdir(parents=True)
    for name in (".ci/run", "requirements.txt", "pyproject.toml"):
        shutil.copy(REPO / name, repo / name)
    key = hashlib.sha256((REPO / "requirements.txt").read_bytes() + (REPO / "pyproject.toml").read_bytes())
    cache = tmp_path / "cache"
    venv = cache / f"venv-{key.hexdigest()[:16]}"
    (venv / "bin").mkdir(parents=True)
    for tool in ("python", "pip", "ruff"):
        (venv / "bin" / tool).write_text(STUB)
        (venv / "bin" / tool).chmod(0o755)
    (venv / ".complete").touch()
    return repo, cache, venv


def _run(repo, cache, log):
    env = {**os.environ, "XLMP_CI_CACHE": str(cache), "CI_LOG": str(log)}
    return subprocess.run(["bash", str(repo / ".ci" / "run")], env=env, capture_output=True, text=True, timeout=60)


def _expected_log():
    return [
        "pip install -q --no-deps --no-build-isolation -e .",
        "ruff check .",
        "ruff format --check .",
        "python -m pytest -n 2",
    ]


def test_without_a_venv_links_the_cached_one_and_runs_the_readme_commands(tmp_path):
    repo, cache, venv = _checkout(tmp_path)
    proc = _run(repo, cache, tmp_path / "log")
    assert proc.returncode == 0, proc.stderr
    assert os.readlink(repo / ".venv") == str(venv)
    assert (tmp_path / "log").read_text().splitlines() == _expected_log()


def test_a_stale_link_into_the_cache_is_replaced(tmp_path):
    repo, cache, venv = _checkout(tmp_path)
    (repo / ".venv").symlink_to(cache / "venv-0000000000000000")
    proc = _run(repo, cache, tmp_path / "log")
    assert proc.returncode == 0, proc.stderr
    assert os.readlink(repo / ".venv") == str(venv)


@pytest.mark.parametrize("kind", ["directory", "link elsewhere"])
def test_a_developers_own_venv_is_left_alone(tmp_path, kind):
    repo, cache, venv = _checkout(tmp_path)
    own = tmp_path / "own-venv"
    (own / "bin").mkdir(parents=True)
    (own / "bin" / "marker").write_text("mine")
    if kind == "directory":
        shutil.copytree(own, repo / ".venv")
    else:
        (repo / ".venv").symlink_to(own)
    proc = _run(repo, cache, tmp_path / "log")
    assert proc.returncode == 0, proc.stderr
    assert (repo / ".venv" / "bin" / "marker").read_text() == "mine"
    assert (repo / ".venv").is_symlink() == (kind != "directory")
    assert f"leaving ./.venv alone (not a link into {cache}); using {venv}" in proc.stdout
    assert (tmp_path / "log").read_text().splitlines() == _expected_log()  # the cached venv's tools ran
