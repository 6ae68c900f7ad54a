"""ARCHITECTURE.md matches the code: it names every module, and every module path it names exists; and the rooms
of ``xlmp_jax`` import only downwards (no upward arrow)."""

import ast
import re

import pytest
from helpers import REPO

PACKAGES = (
    "xlmp_jax",
    "xlmp_jax/runtime",
    "xlmp_jax/model",
    "xlmp_jax/training",
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


def test_the_package_readmes_link_the_module_map_instead_of_keeping_their_own():
    # data_pipelines/README.md once listed its modules in a paragraph of its own, which drifted from the map.
    text = (REPO / "data_pipelines" / "README.md").read_text()
    assert "](../ARCHITECTURE.md)" in text
    stems = {p.stem for p in (REPO / "data_pipelines").glob("*.py")} - {"__init__", "config"}
    named = {stem for stem in stems if re.search(rf"`{stem}`", text)}
    assert len(named) <= 3, f"data_pipelines/README.md keeps a module list: {sorted(named)}"


@pytest.mark.parametrize("room", ["model", "training", "runtime", "hf"])
def test_each_rooms_docstring_names_exactly_its_modules(room):
    # A room's __init__ says what lives there; it names every module of the room and no module elsewhere.
    import importlib

    doc = importlib.import_module(f"xlmp_jax.{room}").__doc__ or ""
    modules = {p.stem for p in (REPO / "xlmp_jax" / room).glob("*.py")} - {"__init__"}
    everywhere = {p.stem for p in (REPO / "xlmp_jax").rglob("*.py")} - {"__init__"}
    named = set(re.findall(r"``(\w+)``", doc)) & everywhere
    assert named == modules, (
        f"xlmp_jax/{room}/__init__.py names {sorted(named - modules)}, misses {sorted(modules - named)}"
    )


def test_the_eval_row_lists_the_registry():
    # The evals ARCHITECTURE.md lists are evals.REGISTRY's, and the package docstring lists none of its own.
    from xlmp_jax import evals

    listed = re.search(r"one module per eval \(([^)]*(?:\([^)]*\)[^)]*)*)\) listed in `evals.REGISTRY`", _text())
    assert listed, "ARCHITECTURE.md's eval row no longer lists the evals before `evals.REGISTRY`"
    assert set(re.findall(r"`(\w+)`", listed[1])) == set(evals.REGISTRY)
    doc = evals.__doc__ or ""
    assert not [name for name in evals.REGISTRY if f"``{name}``" in doc], "evals/__init__.py enumerates the evals"


# ------------------------------------------------------------------------------------------------ no upward arrow

# The layers of xlmp_jax, lowest first: a module imports only from its own layer and those below.
LAYERS = {
    "runtime": 0,  # what a program runs on and survives: imports nothing else of xlmp_jax
    "model": 1,  # the encoder: no mesh, no run, no checkpoint
    "config": 2,  # the typed run config (xlmp_jax/config_utils.py, run_config.py)
    "training": 3,
    "hf": 4,
    "evals": 5,
    "cli": 6,  # train, evaluate, export, aot and the package's __init__ (the public names)
}
CONFIG_MODULES = {"xlmp_jax.config_utils", "xlmp_jax.run_config"}
# Known, documented arrows against the layers (ARCHITECTURE.md, "Rooms"): a run started from transformers
# weights (``init_from_hf``) reads them with the interop wing's loader; imported inside the function that needs it.
ALLOWED_UPWARD = {("xlmp_jax.training.trainer", "xlmp_jax.hf.load")}
OUTSIDE = ("configs", "bench", "launch", "tests")  # what xlmp_jax does not import, but for the arrows below
# The launcher's pure tables, shared so that one rule serves both (imported inside the functions that use them):
# a TPU type's device count (launch.accelerators, with its PreflightError) for the AOT topologies, and the
# mesh and remat a slice runs with (launch.layouts) for the AOT compile check's run.
ALLOWED_OUTSIDE = {
    ("xlmp_jax.runtime.tpu_topology", "launch.accelerators"),
    ("xlmp_jax.runtime.tpu_topology", "launch.command_line"),
    ("xlmp_jax.aot", "launch.layouts"),
    ("xlmp_jax.aot", "launch.command_line"),
}


def _module_name(path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, object]:
    return {_module_name(p): p for p in sorted((REPO / "xlmp_jax").rglob("*.py"))}


def _is_module(dotted: str) -> bool:
    path = REPO.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _imports(path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function (``from a import b``: ``a.b`` if a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found |= {
                f"{node.module}.{a.name}" if _is_module(f"{node.module}.{a.name}") else node.module for a in node.names
            }
    return found


def _layer(module: str) -> str:
    room = module.split(".")[1] if "." in module else ""
    if room in ("runtime", "model", "training", "hf", "evals"):
        return room
    return "config" if module in CONFIG_MODULES else "cli"


def test_no_module_imports_upwards():
    modules = _modules()
    assert {"runtime", "model", "training", "hf", "evals"} <= {m.split(".")[1] for m in modules if "." in m}
    upward, outside = [], []
    for name, path in modules.items():
        for target in _imports(path):
            if target.split(".")[0] in OUTSIDE and (name, target) not in ALLOWED_OUTSIDE:
                outside.append(f"{name} -> {target}")
            if target.split(".")[0] != "xlmp_jax" or (name, target) in ALLOWED_UPWARD:
                continue
            if LAYERS[_layer(target)] > LAYERS[_layer(name)]:
                upward.append(f"{name} ({_layer(name)}) -> {target} ({_layer(target)})")
    assert not outside, f"xlmp_jax imports configs/bench/launch/tests: {outside}"
    assert not upward, f"upward arrows between the rooms of xlmp_jax: {upward}"


def test_the_runtime_room_imports_nothing_else_of_xlmp_jax_and_data_pipelines_only_the_runtime():
    modules = _modules()
    runtime = {n: p for n, p in modules.items() if n.startswith("xlmp_jax.runtime")}
    others = [
        f"{n} -> {t}"
        for n, p in runtime.items()
        for t in _imports(p)
        if t.startswith("xlmp_jax") and not t.startswith("xlmp_jax.runtime")
    ]
    assert not others, others
    # The data pipeline stands below the config (run_config types its block): of xlmp_jax it may use only the
    # runtime (preflight imports TensorFlow through console.import_tensorflow: quiet, off the GPUs).
    data = [
        f"{_module_name(p)} -> {t}"
        for p in sorted((REPO / "data_pipelines").rglob("*.py"))
        for t in _imports(p)
        if t.startswith("xlmp_jax") and not t.startswith("xlmp_jax.runtime")
    ]
    assert not data, data


def test_the_allowed_upward_arrows_still_exist():
    # An exception that no longer happens is removed from ALLOWED_UPWARD, so the list stays the true one.
    modules = _modules()
    for name, target in ALLOWED_UPWARD | ALLOWED_OUTSIDE:
        assert target in _imports(modules[name]), (name, target)
