"""Loading, checking and saving run configs (``configs/*.py``; see ARCHITECTURE.md).

Configs are ml_collections ``ConfigDict``s, locked and type-safe: an override of an unknown field or
with a value of the wrong type fails while the command line is parsed, before JAX compiles anything.
``resolve`` (``run_config``'s, re-exported here) checks a loaded config once and returns it typed
(``run_config.RunConfig``: model with its pool, data, train, mesh), which is all the trainer reads. The
resolved config is written as ``DIR/config.json`` and can be read back with ``read_config_json``.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import sys
from collections.abc import Sequence

import ml_collections
from absl import flags
from ml_collections import config_flags

from xlmp_jax.run_config import ConfigError, RunConfig, resolve

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = str(REPO_ROOT / "configs" / "tiny.py")
CONFIG_JSON = "config.json"


def ensure_importable() -> None:
    """Config files import ``configs.common`` and ``data_pipelines``: put the repo root on sys.path."""
    root = str(REPO_ROOT)
    if root not in sys.path:
        sys.path.insert(0, root)


def config_path_of(spec: str) -> str:
    """The file part of a config flag value (``configs/x.py:arg`` -> ``configs/x.py``)."""
    return spec.split(":", 1)[0]


def check_config_file(spec: str) -> None:
    """A clear error for a missing config file (ml_collections' own message hides the path in a trace)."""
    path = config_path_of(spec)
    if not path:
        raise ConfigError("--config is empty: pass a config file, e.g. --config=configs/tiny.py")
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path!r} (cwd {os.getcwd()!r})")


def load_config(spec: str = DEFAULT_CONFIG, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """Loads ``configs/<name>.py`` with command-line style overrides and checks it (``resolve``).

    Args:
      spec: the config file (optionally ``path:arg``, passed on to ``get_config``).
      overrides: e.g. ``["--config.train.steps=20", "--config.model.pool.enabled=false"]``; the
        ``--config.`` prefix may be left out.

    Returns the ConfigDict (to change further, e.g. in a benchmark); ``load_run`` returns the typed run.
    """
    config = load_file(spec, overrides)
    resolve(config)
    return config


def load_file(spec: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """A config file as a locked ConfigDict with command-line style overrides, as its ``--config`` flag reads
    it, not checked as a run (``load_config`` does that): e.g. the eval sweep's config for ``train.pool_report``."""
    ensure_importable()
    check_config_file(spec)
    argv = ["load_config", f"--config={spec}"]
    for item in overrides:
        item = item if item.startswith("--") else "--config." + item.removeprefix("config.")
        argv.append(item)
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", default=spec, flag_values=flag_values, lock_config=True, sys_argv=argv)
    try:
        flag_values(argv)
        return flag_values.config
    except OVERRIDE_ERRORS as e:
        raise ConfigError(f"bad config override in {argv[2:]}: {describe_override_error(e, argv)}") from e


OVERRIDE_ERRORS = (flags.Error, AttributeError, KeyError, TypeError, ValueError)


def describe_override_error(e: Exception, argv: Sequence[str] = ()) -> str:
    """One readable line for an ml_collections override failure (unknown field, wrong type).

    ml_collections names only the last part of an unknown field (``stepz``); the override in ``argv`` that
    holds it gives the full path (``train.stepz``).
    """
    message = " ".join(str(e).replace("\\n", " ").split()).replace("\\'", "'")
    if len(message) > 1 and message[0] == message[-1] == "'":
        message = message[1:-1]
    if isinstance(e, KeyError | AttributeError) or isinstance(e.__cause__ or e.__context__, KeyError | AttributeError):
        hint = re.match(r"^'?([\w.]+)'? Did you mean (.*?)\??$", message)
        message = (
            f"unknown config field {_full_field(hint[1], argv)} (did you mean {hint[2]}?)"
            if hint
            else "unknown config field " + message
        )
    return message


def _full_field(name: str, argv: Sequence[str]) -> str:
    """``config.train.stepz`` for ``stepz`` if one ``--config.`` override in ``argv`` has that part."""
    for item in argv:
        if not item.startswith("--config."):
            continue
        parts = item.removeprefix("--config.").split("=", 1)[0].split(".")
        if name in parts:
            return ".".join(parts[: parts.index(name) + 1])
    return name


def load_run(spec: str = DEFAULT_CONFIG, overrides: Sequence[str] = ()) -> RunConfig:
    """``resolve(load_config(spec, overrides))`` without checking twice: a config file as a typed run."""
    return resolve(load_file(spec, overrides))


def config_to_json(config: ml_collections.ConfigDict) -> str:
    return json.dumps(config.to_dict(), indent=2, sort_keys=True)


def save_config(config: ml_collections.ConfigDict, workdir: str) -> str:
    """Writes the resolved config to ``workdir/config.json`` (atomically); returns the path."""
    path = os.path.join(workdir, CONFIG_JSON)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(config_to_json(config) + "\n")
    os.replace(tmp, path)
    return path


def config_from_dict(values: dict) -> ml_collections.ConfigDict:
    """A locked ConfigDict from a plain dict (e.g. a saved config.json)."""
    config = ml_collections.ConfigDict(_lists_to_tuples(values))
    config.lock()
    return config


def _lists_to_tuples(value):
    """JSON has no tuples; configs use tuples for sequences (ConfigDict keeps types strict)."""
    if isinstance(value, dict):
        return {k: _lists_to_tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_lists_to_tuples(v) for v in value)
    return value


def read_config_json(path: str) -> ml_collections.ConfigDict:
    """Reads a config saved by ``save_config`` (a file, or a work directory holding config.json)."""
    if os.path.isdir(path):
        path = os.path.join(path, CONFIG_JSON)
    if not os.path.isfile(path):
        raise ConfigError(f"no saved config at {path!r}")
    with open(path) as f:
        return config_from_dict(json.load(f))
