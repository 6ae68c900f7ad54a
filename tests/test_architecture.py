"""ARCHITECTURE.md matches the code: it names every module, and every module path it names exists."""

import re

from helpers import REPO

PACKAGES = (
    "xlmp_jax",
    "xlmp_jax/evals",
    "xlmp_jax/hf",
    "data_pipelines",
    "data_pipelines/sources",
    "launch",
    "xlmp_torch",
)


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


def test_the_readme_links_the_module_map_and_holds_no_second_one():
    # ARCHITECTURE.md is the one module map: the README links it and has no table row naming a module file.
    readme = (REPO / "README.md").read_text()
    assert "](ARCHITECTURE.md)" in readme
    rows = [line for line in readme.splitlines() if line.startswith("|")]
    module = re.compile(r"`(?:(?:xlmp_jax|data_pipelines|launch|xlmp_torch)/)?[\w/]*\w+\.py`")
    tables = [row for row in rows if module.search(row)]
    assert not tables, f"README.md has module table rows (the map is ARCHITECTURE.md's): {tables}"


def test_the_eval_row_lists_the_registry():
    # The evals ARCHITECTURE.md lists are evals.REGISTRY's, and the package docstring lists none of its own.
    from xlmp_jax import evals

    listed = re.search(r"one module per eval \(([^)]*(?:\([^)]*\)[^)]*)*)\) listed in `evals.REGISTRY`", _text())
    assert listed, "ARCHITECTURE.md's eval row no longer lists the evals before `evals.REGISTRY`"
    assert set(re.findall(r"`(\w+)`", listed[1])) == set(evals.REGISTRY)
    doc = evals.__doc__ or ""
    assert not [name for name in evals.REGISTRY if f"``{name}``" in doc], "evals/__init__.py enumerates the evals"
