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

This module is the Orbax manager (``Checkpointer``) and the data-iterator item. The shape check, the PRNG
keys and the vocabulary padding of a restore are ``checkpoint_compat``; reading params and config back
without a manager (export, evaluation, ``load_pretrained``) and the complete steps are ``checkpoint_read``.
Each checkpoint's metadata records the data item's handler by name, ``xlmp_jax.checkpoint.DataIteratorHandler``
(where this module lived first): ``DataIteratorHandler.typestr`` keeps that name, so checkpoints written
before and after the move record the same one.
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
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from xlmp_jax.runtime.faults import FaultInjector
from xlmp_jax.training.checkpoint_compat import IncompatibleCheckpointError, plan_restore, to_storable
from xlmp_jax.training.checkpoint_read import CHECKPOINTS, CONFIG, STATE, CheckpointError

CORRUPT = "checkpoints_corrupt"
DATA = "data"
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


class DataStateError(CheckpointError):
    """The train state of a checkpoint is readable but its input-iterator position is not (the data changed)."""


# --------------------------------------------------------------------------------------------------
# The data-iterator item: TrainData.save/restore into the step directory, one folder per process.


class DataIteratorHandler(ocp.CheckpointHandler):
    """Saves/restores an input iterator (anything with ``save(dir)``/``restore(dir)``).

    Every process calls ``save`` on the same item directory; ``TrainData`` names its files by data
    shard (``input_pipeline-00001-of-00002``), so the hosts' states sit side by side.
    """

    TYPESTR = "xlmp_jax.checkpoint.DataIteratorHandler"  # on disk in every checkpoint's metadata: never change

    @classmethod
    def typestr(cls) -> str:
        """The handler's name in ``_CHECKPOINT_METADATA`` (Orbax's default is the module path, which moved)."""
        return cls.TYPESTR

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
        plan = plan_restore(saved.tree if hasattr(saved, "tree") else saved, like, where)
        restored = self.manager.restore(
            step, args=ocp.args.Composite(**{STATE: ocp.args.StandardRestore(plan.read_as)})
        )
        state = plan.finish(restored[STATE], like)
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
        multihost_utils.sync_global_devices(name)
