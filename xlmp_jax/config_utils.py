"""Loading, checking and saving run configs (``configs/*.py``; see ARCHITECTURE.md).

Configs are ml_collections ``ConfigDict``s, locked and type-safe: an override of an unknown field or
with a value of the wrong type fails while the command line is parsed, before JAX compiles anything.
The resolved config is written as ``DIR/config.json`` and can be read back with ``read_config_json``.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import re
import sys
from collections.abc import Sequence

import ml_collections
from absl import flags
from ml_collections import config_flags

from xlmp_jax.model_config import ModelConfig

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = str(REPO_ROOT / "configs" / "tiny.py")
CONFIG_JSON = "config.json"
SECTIONS = ("model", "data", "train", "mesh", "init_from_hf")
_POSITIVE_TRAIN_INTS = ("steps", "batch_size", "grad_accum_steps", "log_every", "checkpoint_every", "eval_batch_size")
_NON_NEGATIVE_TRAIN_INTS = (
    "warmup_steps",
    "keep_checkpoints",
    "eval_every",
    "eval_batches",
    "max_consecutive_nan",
    "stop_after",
    "data_shards",
)


class ConfigError(ValueError):
    """A config that cannot run; the message names the field and the value."""


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
    """Loads ``configs/<name>.py`` and applies command-line style overrides.

    Args:
      spec: the config file (optionally ``path:arg``, passed on to ``get_config``).
      overrides: e.g. ``["--config.train.steps=20", "--config.model.pool.enabled=false"]``; the
        ``--config.`` prefix may be left out.
    """
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
        config = flag_values.config
    except OVERRIDE_ERRORS as e:
        raise ConfigError(f"bad config override in {argv[2:]}: {describe_override_error(e, argv)}") from e
    validate_config(config)
    return config


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


def validate_config(config: ml_collections.ConfigDict) -> ModelConfig:
    """Checks a resolved config before anything is built; returns its ``ModelConfig``."""
    missing = [name for name in SECTIONS if name not in config]
    if missing:
        raise ConfigError(f"config lacks section(s) {missing}; expected {list(SECTIONS)}")
    try:
        model = ModelConfig.from_dict(config.model)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"bad model config: {e}") from e
    train = config.train
    for name in _POSITIVE_TRAIN_INTS:
        value = train[name]
        if not isinstance(value, int) or value <= 0:
            raise ConfigError(f"train.{name} must be a positive integer, got {value!r}")
    for name in _NON_NEGATIVE_TRAIN_INTS:
        value = train[name]
        if not isinstance(value, int) or value < 0:
            raise ConfigError(f"train.{name} must be a non-negative integer, got {value!r}")
    if train.warmup_steps > train.steps:
        raise ConfigError(f"train.warmup_steps={train.warmup_steps} exceeds train.steps={train.steps}")
    _check_train_floats(train)
    if train.batch_size % train.grad_accum_steps:
        raise ConfigError(
            f"train.batch_size={train.batch_size} is not divisible by train.grad_accum_steps={train.grad_accum_steps}"
        )
    for axis in ("data", "fsdp", "tensor", "dcn_data"):
        value = config.mesh[axis]
        if not isinstance(value, int) or (value <= 0 and value != -1):
            raise ConfigError(f"mesh.{axis} must be a positive integer or -1 (= the rest), got {value!r}")
    if sum(config.mesh[a] == -1 for a in ("data", "fsdp", "tensor")) > 1:
        raise ConfigError(f"at most one mesh axis may be -1, got mesh={config.mesh.to_dict()}")
    from data_pipelines.config import validate_data_config

    try:
        validate_data_config(config.data)  # field values only; files are checked at start-up
    except ValueError as e:
        raise ConfigError(str(e)) from e
    seq = config.data.seq_length
    if seq > model.max_length:
        raise ConfigError(
            f"data.seq_length={seq} exceeds the model's position table "
            f"(model.max_position_embeddings={model.max_position_embeddings} holds {model.max_length} tokens)"
        )
    return model


# (field, lowest, highest, whether the lowest itself is allowed); every bound is inclusive but `lowest` may not be.
_TRAIN_FLOATS = (
    ("learning_rate", 0.0, math.inf, False),  # 0 trains nothing: a typo, not a run
    ("weight_decay", 0.0, math.inf, True),
    ("b1", 0.0, 1.0, True),
    ("b2", 0.0, 1.0, True),
    ("eps", 0.0, math.inf, False),
    ("grad_clip", 0.0, math.inf, True),  # 0 = off
    ("label_smoothing", 0.0, 1.0, True),
    ("z_loss", 0.0, math.inf, True),
    ("peak_flops", 0.0, math.inf, True),  # 0 = the device table
)


def _check_train_floats(train: ml_collections.ConfigDict) -> None:
    for name, low, high, low_ok in _TRAIN_FLOATS:
        if name not in train:
            continue
        value = train[name]
        number = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        if not number or not (value >= low if low_ok else value > low) or value > high:
            bounds = f"{'[' if low_ok else '('}{low}, {high}{']' if math.isfinite(high) else ')'}"
            raise ConfigError(f"train.{name} must be a finite number in {bounds}, got {value!r}")


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
