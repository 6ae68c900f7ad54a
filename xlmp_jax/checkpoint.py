"""Orbax checkpoints of a training run (see ARCHITECTURE.md).

Layout: ``WORKDIR/checkpoints/<step>/`` holds three items, written together and atomically by an Orbax
``CheckpointManager`` (written to a temporary directory, renamed when complete, so a crash mid-save
leaves the previous checkpoint as the latest):

* ``state``  -- the train state (params, optimizer state, step, RNG, NaN streak), sharded arrays;
* ``data``   -- the input iterator's position, one file set per data shard (``TrainData.save``);
* ``config`` -- the resolved run config (JSON).

Kept: the last ``keep`` checkpoints plus the one with the best (lowest) eval loss. Restoring reads
the arrays straight into the shardings of the target state, so a run can resume on another mesh. A
checkpoint that cannot be read is *moved aside* to ``WORKDIR/checkpoints_corrupt/`` (never deleted),
with a warning naming it, and the previous one is used. A checkpoint whose parameter shapes differ
from the model's is an ``IncompatibleCheckpointError`` naming the path and the parameter, except one
written before vocabulary padding (``model.vocab_multiple``), whose vocabulary rows are padded on restore.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from xlmp_jax.faults import FaultInjector

CHECKPOINTS = "checkpoints"
CORRUPT = "checkpoints_corrupt"
STATE, DATA, CONFIG = "state", "data", "config"
EVAL_METRIC = "eval_loss"
_UNCOMMITTED = re.compile(r"^(\d+)\.orbax-checkpoint-tmp")  # Orbax writes step N into N.orbax-checkpoint-tmp-*

log = logging.getLogger(__name__)


class _NoMetricsNotice(logging.Filter):
    """Drops Orbax's warning for a save without metrics: only eval steps have an eval loss, by design.

    The best-eval policy (``BestN``, ``keep_checkpoints_without_metrics=False``) is meant to skip those saves;
    Orbax warns ``Requested `tracked_metric`; did not provide metrics.`` on each of them all the same.
    """

    MESSAGE = "Requested `tracked_metric`; did not provide metrics."

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.msg == self.MESSAGE and record.pathname.endswith("checkpoint_manager.py"))


def _install_no_metrics_filter() -> None:
    absl_logger = logging.getLogger("absl")
    if not any(isinstance(f, _NoMetricsNotice) for f in absl_logger.filters):
        absl_logger.addFilter(_NoMetricsNotice())


class CheckpointError(RuntimeError):
    """No usable checkpoint where one was asked for; the message names the path."""


class DataStateError(CheckpointError):
    """The train state of a checkpoint is readable but its input-iterator position is not (the data changed)."""


class IncompatibleCheckpointError(ValueError):
    """The checkpoint was written by a model of other shapes; the message names the path and parameter."""


# --------------------------------------------------------------------------------------------------
# The data-iterator item: TrainData.save/restore into the step directory, one folder per process.


class DataIteratorHandler(ocp.CheckpointHandler):
    """Saves/restores an input iterator (anything with ``save(dir)``/``restore(dir)``).

    Every process calls ``save`` on the same item directory; ``TrainData`` names its files by data
    shard (``input_pipeline-00001-of-00002``), so the hosts' states sit side by side.
    """

    def __init__(self, while_saving: Callable[[], None] | None = None):
        self.while_saving = while_saving  # called once the iterator is written, before the step is committed

    def save(self, directory: epath.Path, args: DataIteratorSave) -> None:
        epath.Path(directory).mkdir(parents=True, exist_ok=True)
        args.data.save(os.fspath(directory))
        if self.while_saving is not None:
            self.while_saving()

    def restore(self, directory: epath.Path, args: DataIteratorRestore) -> Any:
        args.data.restore(os.fspath(directory))
        return args.data

    def metadata(self, directory: epath.Path) -> None:
        return None


@ocp.args.register_with_handler(DataIteratorHandler, for_save=True)
@dataclasses.dataclass
class DataIteratorSave(ocp.args.CheckpointArgs):
    data: Any


@ocp.args.register_with_handler(DataIteratorHandler, for_restore=True)
@dataclasses.dataclass
class DataIteratorRestore(ocp.args.CheckpointArgs):
    data: Any


# --------------------------------------------------------------------------------------------------
# PRNG keys: Orbax stores plain arrays, so typed keys travel as their key data.


def _is_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def to_storable(state: Any) -> Any:
    """Typed PRNG keys -> raw uint32 key data (other leaves unchanged)."""
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, state)


def from_storable(restored: Any, like: Any) -> Any:
    """Undoes ``to_storable`` using ``like`` (a state of the same structure) to find the key leaves."""
    return jax.tree.map(
        lambda r, t: jax.random.wrap_key_data(r, impl=jax.random.key_impl(t)) if _is_key(t) else r, restored, like
    )


def _abstract(state: Any) -> Any:
    """ShapeDtypeStructs carrying each leaf's sharding: the restore target (the mesh may differ from the save's)."""

    def leaf(x):
        if isinstance(x, jax.ShapeDtypeStruct):
            return x
        if isinstance(x, jax.Array):
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
        return x

    return jax.tree.map(leaf, to_storable(state))


# --------------------------------------------------------------------------------------------------
# Shape comparison, for a clear "incompatible checkpoint" error.


def _path_str(path: tuple) -> str:
    parts = []
    for k in path:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return "/".join(parts)


def _shapes(tree: Any) -> dict[str, tuple]:
    leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: x is None)[0]
    return {_path_str(p): tuple(x.shape) for p, x in leaves if x is not None and hasattr(x, "shape")}


def check_compatible(saved_tree: Any, target_state: Any, where: str) -> None:
    """Raises IncompatibleCheckpointError naming the first parameter whose shape (or presence) differs."""
    saved = _shapes(saved_tree)
    target = _shapes(ocp.tree.serialize_tree(_abstract(target_state), keep_empty_nodes=True))
    # Parameters first: that is the mismatch a user can act on (another model size / pool setting).
    for prefix in ("params/", ""):
        for name in sorted(set(saved) | set(target)):
            if not name.startswith(prefix):
                continue
            if name not in saved:
                raise IncompatibleCheckpointError(f"checkpoint {where} lacks {name!r} (shape {target[name]})")
            if name not in target:
                raise IncompatibleCheckpointError(
                    f"checkpoint {where} has {name!r} (shape {saved[name]}), which this model does not"
                )
            if saved[name] != target[name]:
                raise IncompatibleCheckpointError(
                    f"checkpoint {where} is incompatible with this config: {name!r} has shape {saved[name]} "
                    f"there but {target[name]} here"
                )


# Checkpoints written before vocabulary padding: their vocabulary leaves have vocab_size rows, the model's
# padded_vocab_size. They are read at the saved size (replicated) and zero-padded into the target sharding:
# the padding rows of the params and of both Adam moments are zeros, as in a fresh padded state.
_VOCAB_LEAVES = ("embeddings/word_embeddings", "lm_head/bias")


def _unpadded_vocab(saved: dict[str, tuple], target: dict[str, tuple]) -> dict[str, tuple]:
    """name -> saved shape of the vocabulary leaves saved with fewer rows than the target has (else equal)."""
    out = {}
    for name, shape in saved.items():
        want = target.get(name)
        if want is None or want == shape or not name.endswith(_VOCAB_LEAVES):
            continue
        if len(shape) == len(want) and shape[1:] == want[1:] and shape[0] < want[0]:
            out[name] = shape
    return out


def _with_shapes(abstract: Any, shapes: dict[str, tuple]) -> Any:
    """``abstract`` with the named leaves given those shapes, replicated over their mesh."""

    def leaf(path, x):
        name = _path_str(path)
        if name not in shapes:
            return x
        sharding = jax.sharding.NamedSharding(x.sharding.mesh, jax.sharding.PartitionSpec())
        return jax.ShapeDtypeStruct(shapes[name], x.dtype, sharding=sharding)

    return jax.tree_util.tree_map_with_path(leaf, abstract)


def _pad_rows(restored: Any, target: Any, names: dict[str, tuple]) -> Any:
    """The named leaves of ``restored`` zero-padded to ``target``'s shapes and placed in its shardings."""

    def leaf(path, x, want):
        if _path_str(path) not in names:
            return x
        widths = [(0, want.shape[0] - x.shape[0])] + [(0, 0)] * (x.ndim - 1)
        return jax.device_put(jax.numpy.pad(x, widths), want.sharding)

    return jax.tree_util.tree_map_with_path(leaf, restored, target)


# --------------------------------------------------------------------------------------------------


def _step_dirs(directory: epath.Path) -> list[int]:
    if not directory.exists():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit() and p.is_dir())


class Checkpointer:
    """Save/restore of a run's checkpoints in ``workdir/checkpoints`` (see the module docstring)."""

    def __init__(self, workdir: str, *, keep: int = 3, async_save: bool = True, faults: FaultInjector | None = None):
        """``faults``: the fault points ``in_save`` and ``after_commit`` (with faults set, each save is awaited)."""
        self.workdir = os.path.abspath(workdir)
        self.faults = faults if faults is not None and faults.active else None
        self._saving: int | None = None
        self.directory = epath.Path(self.workdir) / CHECKPOINTS
        self._set_aside_uncommitted()
        policies = [ocp.checkpoint_managers.LatestN(n=max(keep, 1))]
        policies.append(
            ocp.checkpoint_managers.BestN(
                get_metric_fn=lambda m: m[EVAL_METRIC], reverse=True, n=1, keep_checkpoints_without_metrics=False
            )
        )
        options = ocp.CheckpointManagerOptions(
            best_fn=lambda m: m[EVAL_METRIC],
            best_mode="min",
            preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
            enable_async_checkpointing=async_save,
            create=True,
        )
        handlers = {
            STATE: ocp.StandardCheckpointHandler(),
            DATA: DataIteratorHandler(while_saving=self._while_saving if self.faults else None),
            CONFIG: ocp.JsonCheckpointHandler(),
        }
        self.manager = ocp.CheckpointManager(self.directory, item_handlers=handlers, options=options)
        _install_no_metrics_filter()

    def _set_aside_uncommitted(self) -> None:
        """Moves saves that never committed (the run died during them) to ``checkpoints_corrupt/``, with a warning.

        Orbax never restores one, but it deletes it when that step is saved again; a person debugging a
        crash should find it, so it is moved aside like an unreadable checkpoint.
        """
        if jax.process_index() == 0 and self.directory.exists():
            for path in sorted(self.directory.iterdir(), key=lambda p: p.name):
                match = _UNCOMMITTED.match(path.name)
                if match is None or not path.is_dir():
                    continue
                target = os.path.join(self.workdir, CORRUPT, path.name)
                log.warning(
                    "the save of checkpoint step %s never committed (the run stopped during it): %s is not a "
                    "checkpoint and is not restored; moving it to %s (not deleted)",
                    match[1],
                    path,
                    target,
                )
                os.makedirs(os.path.dirname(target), exist_ok=True)
                shutil.move(os.fspath(path), target)
        _sync("set_aside_uncommitted")

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(
        self,
        step: int,
        state: Any,
        *,
        data: Any = None,
        config: ml_collections.ConfigDict | None = None,
        eval_loss: float | None = None,
    ) -> bool:
        """Starts an (async) save of ``state`` (+ data iterator, config); False if ``step`` is already saved."""
        if step in self.manager.all_steps():
            return False
        items = {STATE: ocp.args.StandardSave(to_storable(state))}
        if data is not None:
            items[DATA] = DataIteratorSave(data)
        if config is not None:
            items[CONFIG] = ocp.args.JsonSave(json.loads(config.to_json()))
        metrics = None if eval_loss is None else {EVAL_METRIC: float(eval_loss)}
        self._saving = step
        started = self.manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=True)
        if self.faults is not None:
            self.manager.wait_until_finished()
            self.faults("after_commit", step)
        return started

    def _while_saving(self) -> None:
        self.faults("in_save", self._saving)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()

    def restore(self, step: int, like: Any, data: Any = None) -> Any:
        """Restores step ``step`` into the shardings of ``like`` (a state, or its abstract twin)."""
        where = os.fspath(self.directory / str(step))
        saved = self.manager.item_metadata(step)[STATE]
        if saved is None:
            raise CheckpointError(f"{where} has no train state")
        saved_tree = saved.tree if hasattr(saved, "tree") else saved
        target = _abstract(like)
        unpadded = _unpadded_vocab(_shapes(saved_tree), _shapes(target))
        if unpadded:
            log.warning("checkpoint %s was written before vocabulary padding: padding %s", where, sorted(unpadded))
        check_compatible(saved_tree, _with_shapes(target, unpadded), where)
        restored = self.manager.restore(
            step, args=ocp.args.Composite(**{STATE: ocp.args.StandardRestore(_with_shapes(target, unpadded))})
        )
        state = from_storable(_pad_rows(restored[STATE], target, unpadded), like)
        if data is not None:  # separately: a changed data pipeline must not make a good checkpoint look corrupt
            try:
                self.manager.restore(step, args=ocp.args.Composite(**{DATA: DataIteratorRestore(data)}))
            except Exception as e:  # noqa: BLE001 -- tf.data raises many types here
                raise DataStateError(
                    f"{where}: the train state is readable but the input iterator's position is not "
                    f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}); did config.data or "
                    "the input pipeline change since it was saved? The checkpoint is left in place; "
                    "config.train.restore_data=False restores its model state and continues the input at that step."
                ) from e
        return state

    def restore_latest(self, like: Any, data: Any = None) -> tuple[Any, int] | None:
        """Restores the newest readable checkpoint; None if there is none.

        An unreadable step directory (corrupt or partial) is moved to ``checkpoints_corrupt/`` with a
        warning and the previous step is tried; an incompatible one raises at once.
        """
        steps = self.all_steps()
        failures = []
        for step in reversed(steps):
            try:
                return self.restore(step, like, data), step
            except (IncompatibleCheckpointError, DataStateError):
                raise
            except Exception as e:  # noqa: BLE001 -- any read failure means this step is unusable
                failures.append(step)
                self._quarantine(step, e)
        if failures:
            raise CheckpointError(
                f"no readable checkpoint in {self.directory}: steps {failures} all failed to restore "
                f"(moved to {os.path.join(self.workdir, CORRUPT)})"
            )
        return None

    def _quarantine(self, step: int, error: Exception) -> None:
        source = self.directory / str(step)
        target = os.path.join(self.workdir, CORRUPT, f"{step}-{int(time.time())}")
        log.warning(
            "checkpoint %s is unreadable (%s: %s); skipping it, moving it to %s (not deleted)",
            source,
            type(error).__name__,
            str(error).splitlines()[0][:300] if str(error) else "",
            target,
        )
        if jax.process_index() == 0:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.move(os.fspath(source), target)
        _sync(f"quarantine_{step}")
        self.manager.reload()


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


# --------------------------------------------------------------------------------------------------
# Read-only API (export, evaluation): interface 7.


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


def _read_config(step_dir: epath.Path) -> ml_collections.ConfigDict:
    for candidate in (step_dir / CONFIG / "metadata", step_dir.parent.parent / "config.json"):
        if candidate.exists():
            config = ml_collections.ConfigDict(json.loads(candidate.read_text()))
            config.lock()
            return config
    raise CheckpointError(f"{os.fspath(step_dir)} has no saved config")
