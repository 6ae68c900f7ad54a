"""ARCHITECTURE.md matches the code: it names every module, and every module path it names exists."""

import re

from helpers import REPO

PACKAGES = ("xlmp_jax", "xlmp_jax/evals", "xlmp_jax/hf", "data_pipelines", "launch", "xlmp_torch")


def _text() -> str:
    return (REPO / "ARCHITECTURE.md").read_text()


def test_every_module_is_named():
    text = _text()
    modules = [p for pkg in PACKAGES for p in sorted((REPO / pkg).glob("*.py")) if p.stem != "__init__"]
    assert len(modules) > 60
    unnamed = [str(p.relative_to(REPO)) for p in modules if not re.search(rf"\b{p.stem}\b", text)]
    assert not unnamed, f"ARCHITECTURE.md does not name {unnamed}"


def test_every_named_module_path_exists():
    # Paths written out in full (`dir/name.py`), and the `name.py` entries of each table row's folder.
    text = _text()
    named = set(re.findall(r"`((?:xlmp_jax|data_pipelines|launch|configs|bench|tests)/[\w/]+\.py)`", text))
    for row in re.findall(r"^\| `((?:xlmp_jax|data_pipelines)(?:/\w+)*)/\w+\.py`(.*?) \|", text, re.M):
        folder, rest = row
        named |= {f"{folder}/{name}" for name in re.findall(r"`(\w+\.py)`", rest)}
    assert len(named) > 20
    missing = sorted(path for path in named if not (REPO / path).exists())
    assert not missing, f"ARCHITECTURE.md names modules that do not exist: {missing}"
