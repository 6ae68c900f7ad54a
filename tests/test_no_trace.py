"""A test run leaves no trace in the user's cache folder: conftest fails the run that adds an entry there."""

import os
import subprocess
import sys

from helpers import REPO


def _pytest(tmp_path, body: str, user_cache) -> subprocess.CompletedProcess:
    (tmp_path / "test_writes.py").write_text(body)
    env = dict(
        os.environ, XLMP_TESTS_USER_CACHE=str(user_cache), PYTHONPATH=os.pathsep.join([str(REPO / "tests"), str(REPO)])
    )
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "conftest", "-p", "no:cacheprovider", str(tmp_path)]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_a_run_that_writes_into_the_user_cache_fails(tmp_path):
    user_cache = tmp_path / "user-cache"
    user_cache.mkdir()
    writes = (
        "import os\n\ndef test_x():\n    open(os.path.join(os.environ['XLMP_TESTS_USER_CACHE'], 'left'), 'w').close()\n"
    )
    clean = _pytest(tmp_path, "def test_x():\n    pass\n", user_cache)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    bad = _pytest(tmp_path, writes, user_cache)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "wrote into the user's cache folder" in bad.stdout and "left" in bad.stdout


def test_the_run_points_caches_into_its_own_folder():
    tmp = os.environ["XLMP_TESTS_TMPDIR"]
    for name in ("XDG_CACHE_HOME", "MPLCONFIGDIR", "JAX_COMPILATION_CACHE_DIR"):
        assert not os.path.relpath(os.environ[name], os.path.dirname(tmp)).startswith(".."), name
    assert os.environ["XDG_CACHE_HOME"].startswith(tmp) and os.environ["MPLCONFIGDIR"].startswith(tmp)
