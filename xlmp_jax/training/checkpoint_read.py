"""Reading a run's checkpoints back without the Orbax manager: the parameters and config for inference,
export and evaluation, and which steps are complete.

The layout is ``xlmp_jax.training.checkpoint``'s (``WORKDIR/checkpoints/<step>/{state,data,config}``). Only finished
saves count: a step directory with its ``state`` item and Orbax's ``_CHECKPOINT_METADATA`` (written last,
at commit). The config comes from the step's ``config`` item, else the work directory's ``config.json``.
"""

from __future__ import annotations

import json
import os

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

CHECKPOINTS = "checkpoints"
STATE, CONFIG = "state", "config"


class CheckpointError(RuntimeError):
    """No usable checkpoint where one was asked for; the message names the path."""


def _step_dirs(directory: epath.Path) -> list[int]:
    if not directory.exists():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit() and p.is_dir())


def _resolve(path: str) -> tuple[epath.Path, int | None]:
    """(checkpoints directory, step or None) for a work directory or a step directory."""
    p = epath.Path(os.path.abspath(path))
    if not p.exists():
        raise CheckpointError(f"no checkpoint in {os.fspath(p)}: the path does not exist")
    if (p / CHECKPOINTS).is_dir():
        return p / CHECKPOINTS, None
    if p.name.isdigit() and (p / STATE).is_dir():
        return p.parent, int(p.name)
    if (p / STATE).is_dir() is False and any(c.name.isdigit() for c in p.iterdir()):
        return p, None  # the checkpoints directory itself
    raise CheckpointError(f"no checkpoint in {os.fspath(p)}: expected a work directory or a checkpoint step directory")


def all_steps(workdir: str) -> list[int]:
    """The steps with a complete checkpoint in ``workdir`` (finished saves only)."""
    p = epath.Path(os.path.abspath(workdir))
    directory = p / CHECKPOINTS if (p / CHECKPOINTS).is_dir() else p
    return [s for s in _step_dirs(directory) if _is_complete(directory / str(s))]


def latest_step(workdir: str) -> int | None:
    steps = all_steps(workdir)
    return steps[-1] if steps else None


def _is_complete(step_dir: epath.Path) -> bool:
    return (step_dir / STATE).is_dir() and (step_dir / "_CHECKPOINT_METADATA").exists()


def load_params(path: str, step: int | None = None) -> tuple[ml_collections.ConfigDict, dict, int]:
    """Loads (config, params as nested NumPy arrays, step) from a work directory or step directory.

    Reads only the parameters (not the optimizer state), onto the host, whatever mesh wrote them.
    """
    directory, dir_step = _resolve(path)
    steps = [s for s in _step_dirs(directory) if _is_complete(directory / str(s))]
    if not steps:
        raise CheckpointError(f"no checkpoint in {os.fspath(directory)}")
    if step is None:
        step = dir_step if dir_step is not None else steps[-1]
    if step not in steps:
        raise CheckpointError(f"step {step} not in {os.fspath(directory)} (have: {steps})")
    step_dir = directory / str(step)
    config = _read_config(step_dir)
    return config, _read_params(step_dir / STATE), int(step)


def _read_params(item_dir: epath.Path) -> dict:
    """The ``params`` subtree of a ``state`` item, as host NumPy arrays.

    Read with the item's handler, as the ``CheckpointManager`` that wrote it does: the step's
    ``_CHECKPOINT_METADATA`` lies one level up, next to the items, so a ``Checkpointer`` pointed at the
    item directory would look for it inside and warn ``Metadata file does not exist``.
    """
    handler = ocp.PyTreeCheckpointHandler()
    try:
        meta = handler.metadata(item_dir)
        tree = meta.tree if hasattr(meta, "tree") else meta
        if "params" not in tree:
            raise CheckpointError(f"{os.fspath(item_dir.parent)} holds no params")
        shapes = tree["params"]
        item = {"params": jax.tree.map(lambda m: np.zeros(m.shape, m.dtype), shapes)}
        restore_args = {"params": jax.tree.map(lambda m: ocp.RestoreArgs(restore_type=np.ndarray), shapes)}
        restored = handler.restore(
            item_dir, args=ocp.args.PyTreeRestore(item=item, restore_args=restore_args, partial_restore=True)
        )
    finally:
        handler.close()
    return restored["params"]


def saved_config(step_dir: epath.Path) -> dict | None:
    """The run config a checkpoint step saved with itself (a plain dict), or None if it has none."""
    path = epath.Path(step_dir) / CONFIG / "metadata"
    return json.loads(path.read_text()) if path.exists() else None


def _read_config(step_dir: epath.Path) -> ml_collections.ConfigDict:
    for candidate in (step_dir / CONFIG / "metadata", step_dir.parent.parent / "config.json"):
        if candidate.exists():
            config = ml_collections.ConfigDict(json.loads(candidate.read_text()))
            config.lock()
            return config
    raise CheckpointError(f"{os.fspath(step_dir)} has no saved config")
