"""Orbax checkpoints (xlmp_jax/training/checkpoint*.py): round trip, another mesh, keep/best, corrupt and incompatible ones."""

import gc
import json
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import init_state, mesh_of, model_of

from xlmp_jax import config_utils
from xlmp_jax.runtime import faults
from xlmp_jax.training import checkpoint, checkpoint_read, sharding


def _config(**overrides):
    items = ["train.steps=10", "train.warmup_steps=2", "model.pool.size=8", "data.seq_length=32"]
    return config_utils.load_config("configs/tiny.py", items + [f"{k}={v}" for k, v in overrides.items()])


def _state(config, devices):
    mesh = sharding.make_mesh(mesh_of(**config.mesh), devices)
    state, shardings = init_state(config, mesh, jax.random.key(0))
    return mesh, state, shardings


@pytest.fixture(scope="module")
def state8():
    """One train state on an 8-device (data=8) mesh, shared by the tests (XLA CPU compiles are slow)."""
    return _state(_config(), jax.devices()[:8])[1]


class FakeIterator:
    """Stands in for TrainData: only its save/restore contract matters here."""

    def __init__(self, position=0):
        self.position = position

    def save(self, directory):
        with open(os.path.join(directory, "pos.json"), "w") as f:
            json.dump(self.position, f)

    def restore(self, directory):
        with open(os.path.join(directory, "pos.json")) as f:
            self.position = json.load(f)


def _assert_trees_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _perturbed(state, step):
    """A state that differs from a fresh one (so restoring cannot pass by accident)."""
    params = jax.tree.map(lambda x: x + 0.5, state.params)
    return state.replace(params=params, step=state.step + step)


@pytest.mark.slow
def test_round_trip_onto_another_mesh_with_data_and_config(tmp_path, state8):
    config = _config()
    saved = _perturbed(state8, 7)
    ckpt = checkpoint.Checkpointer(str(tmp_path), keep=2)
    ckpt.save(7, saved, data=FakeIterator(123), config=config)
    ckpt.close()
    # Orbax records each item's handler by name (its module path unless it says otherwise): the name stays
    # the one every checkpoint since the first records, though the module moved (DataIteratorHandler.typestr).
    metadata = json.loads((tmp_path / "checkpoints" / "7" / "_CHECKPOINT_METADATA").read_text())
    assert metadata["item_handlers"]["data"] == "xlmp_jax.checkpoint.DataIteratorHandler"

    # Restore onto a 4-device mesh, FSDP-sharded this time: 8 -> 4 devices, another layout.
    config4 = _config(**{"mesh.data": 1, "mesh.fsdp": 4})
    mesh4, fresh4, _ = _state(config4, jax.devices()[:4])
    data = FakeIterator(0)
    restored, step = checkpoint.Checkpointer(str(tmp_path)).restore_latest(fresh4, data)
    assert step == 7 and data.position == 123 and int(restored.step) == int(saved.step)
    _assert_trees_equal(restored.params, saved.params)
    _assert_trees_equal(restored.opt_state, saved.opt_state)
    emb = restored.params["embeddings"]["word_embeddings"]
    assert emb.sharding.mesh.devices.size == 4 and set(emb.devices()) == set(jax.devices()[:4])
    assert emb.sharding.spec == fresh4.params["embeddings"]["word_embeddings"].sharding.spec

    loaded_config, params, loaded_step = checkpoint_read.load_params(str(tmp_path))
    assert loaded_step == 7 and loaded_config.model.pool.size == 8
    assert isinstance(params["embeddings"]["word_embeddings"], np.ndarray)
    _assert_trees_equal(params, saved.params)
    assert checkpoint_read.load_params(str(tmp_path / "checkpoints" / "7"))[2] == 7
    assert checkpoint_read.all_steps(str(tmp_path)) == [7] and checkpoint_read.latest_step(str(tmp_path)) == 7


def test_keeps_last_n_plus_best_eval(tmp_path, state8):
    state = state8
    ckpt = checkpoint.Checkpointer(str(tmp_path), keep=2)
    for step, loss in [(1, 3.0), (2, 1.0), (3, 2.0), (4, None), (5, 4.0), (6, None)]:
        ckpt.save(step, state.replace(step=state.step + step), eval_loss=loss)
    ckpt.close()
    # the last two (5, 6) and the best by eval loss (2)
    assert checkpoint_read.all_steps(str(tmp_path)) == [2, 5, 6]


def test_corrupt_checkpoint_is_skipped_not_deleted(tmp_path, caplog, state8):
    state = state8
    ckpt = checkpoint.Checkpointer(str(tmp_path), keep=3)
    ckpt.save(1, _perturbed(state, 1))
    ckpt.save(2, _perturbed(state, 2))
    ckpt.close()
    bad = tmp_path / "checkpoints" / "2"
    for root, _, files in os.walk(bad / "state"):  # truncate every array file of the newest step
        for name in files:
            if "ocdbt" in root or name.startswith("manifest"):
                open(os.path.join(root, name), "wb").close()

    with caplog.at_level(logging.WARNING):
        restored, step = checkpoint.Checkpointer(str(tmp_path)).restore_latest(state)
    assert step == 1
    _assert_trees_equal(restored.params, _perturbed(state, 1).params)
    assert str(bad) in caplog.text and "unreadable" in caplog.text
    moved = os.listdir(tmp_path / checkpoint.CORRUPT)
    assert len(moved) == 1 and moved[0].startswith("2-")  # kept for inspection
    assert checkpoint_read.all_steps(str(tmp_path)) == [1]


def test_incompatible_checkpoint_names_path_and_param(tmp_path, state8):
    ckpt = checkpoint.Checkpointer(str(tmp_path))
    ckpt.save(3, state8)
    ckpt.close()

    # The target of a model with a 4-prompt pool (the saved one has 8): shapes only, nothing allocated.
    def target(path, x):
        shape = (4, *x.shape[1:]) if "pool" in jax.tree_util.keystr(path) else x.shape
        return jax.ShapeDtypeStruct(shape, x.dtype, sharding=x.sharding)

    other = jax.tree_util.tree_map_with_path(target, state8)
    with pytest.raises(checkpoint.IncompatibleCheckpointError) as e:
        checkpoint.Checkpointer(str(tmp_path)).restore_latest(other)
    message = str(e.value)
    assert str(tmp_path / "checkpoints" / "3") in message and "params/pool/keys" in message
    assert "(8, 64)" in message and "(4, 64)" in message
    assert os.path.isdir(tmp_path / "checkpoints" / "3")  # an incompatible checkpoint is not "corrupt"


@pytest.mark.slow
def test_restore_across_the_scan_switch_converts_params_and_optimizer_state(tmp_path, state8):
    from xlmp_jax.model import layer_stack

    saved = _perturbed(state8, 3)
    moved = jax.tree.map(lambda x: x + 0.25 if jnp.issubdtype(x.dtype, jnp.floating) else x, saved.opt_state)
    saved = saved.replace(opt_state=moved)  # Adam moments that are not zeros, so their conversion shows
    ckpt = checkpoint.Checkpointer(str(tmp_path))
    ckpt.save(3, saved)
    ckpt.close()
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state8)

    def scanned(tree):
        return layer_stack.to_layout(tree, scan=True)

    # a loop checkpoint into a scanned run: params and Adam moments stacked, every value kept
    target = abstract.replace(params=scanned(abstract.params), opt_state=scanned(abstract.opt_state))
    restored, step = checkpoint.Checkpointer(str(tmp_path)).restore_latest(target)
    assert step == 3
    want = saved.replace(params=scanned(saved.params), opt_state=scanned(saved.opt_state))
    _assert_trees_equal(restored, want)
    for got, place in zip(jax.tree.leaves(restored), jax.tree.leaves(target), strict=True):
        assert got.sharding.is_equivalent_to(place.sharding, got.ndim)

    # and back: the scanned state saved, restored into the loop form
    other = tmp_path / "scanned"
    ckpt = checkpoint.Checkpointer(str(other))
    ckpt.save(4, restored)
    ckpt.close()
    back, _ = checkpoint.Checkpointer(str(other)).restore_latest(abstract)
    _assert_trees_equal(back, saved)


def test_load_params_errors(tmp_path, state8):
    with pytest.raises(checkpoint_read.CheckpointError, match="no checkpoint in"):
        checkpoint_read.load_params(str(tmp_path))
    ckpt = checkpoint.Checkpointer(str(tmp_path))
    ckpt.save(5, state8, config=_config())
    ckpt.close()
    with pytest.raises(checkpoint_read.CheckpointError, match=r"step 9 not in .*checkpoints \(have: \[5\]\)"):
        checkpoint_read.load_params(str(tmp_path), step=9)


def test_load_params_reads_the_state_item_without_metadata_warnings(tmp_path, caplog, state8):
    """The step's _CHECKPOINT_METADATA sits next to the items, not inside ``state/``: loading must not look there.

    (Export and the eval sweep used to warn ``Metadata file does not exist: .../N/state/_CHECKPOINT_METADATA``.)
    """
    saved = _perturbed(state8, 4)
    ckpt = checkpoint.Checkpointer(str(tmp_path))
    ckpt.save(4, saved, config=_config())
    ckpt.close()
    assert (tmp_path / "checkpoints" / "4" / "_CHECKPOINT_METADATA").exists()
    assert not (tmp_path / "checkpoints" / "4" / "state" / "_CHECKPOINT_METADATA").exists()
    gc.collect()  # a task another test's corrupt checkpoint left to Orbax's event loop logs when collected
    caplog.clear()
    with caplog.at_level(logging.INFO):
        _, params, step = checkpoint_read.load_params(str(tmp_path))
    assert step == 4
    _assert_trees_equal(params, saved.params)
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if "Metadata file does not exist" in m or "_CHECKPOINT_METADATA" in m], messages
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], messages


def test_a_save_without_eval_loss_does_not_warn(tmp_path, caplog, state8):
    """Only eval steps carry an eval loss; Orbax's 'did not provide metrics' warning is not news (filtered)."""
    ckpt = checkpoint.Checkpointer(str(tmp_path))
    with caplog.at_level(logging.WARNING):
        ckpt.save(1, state8)
        ckpt.save(2, state8, eval_loss=1.5)
        ckpt.close()
    # Orbax's note that a save waited for the one before (>1 s on a loaded machine) is about timing, not metrics
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [m for m in warned if not m.startswith("Waiting for previous save")], warned
    assert ckpt.all_steps() == [1, 2]
    from absl import logging as absl_logging

    with caplog.at_level(logging.WARNING):  # the filter is that one message, nothing else
        absl_logging.warning("Requested `tracked_metric`; something else.")
    assert [r.getMessage() for r in caplog.records] == ["Requested `tracked_metric`; something else."]


class _RecordingFaults(faults.FaultInjector):
    """Records the fault points a save passes, with the committed steps at that moment, instead of signalling."""

    def __init__(self, workdir):
        super().__init__("sigterm@in_save")  # any entry: the injector is active
        self.workdir, self.seen = workdir, []

    def __call__(self, point, step=None):
        self.seen.append((point, step, checkpoint_read.all_steps(str(self.workdir))))


def test_save_passes_in_save_before_the_commit_and_after_commit_after_it(tmp_path, state8):
    recorder = _RecordingFaults(tmp_path)
    ckpt = checkpoint.Checkpointer(str(tmp_path), faults=recorder)
    ckpt.save(3, state8, data=FakeIterator(1))
    assert recorder.seen == [("in_save", 3, []), ("after_commit", 3, [3])]
    ckpt.close()
    quiet = checkpoint.Checkpointer(str(tmp_path / "b"), faults=faults.FaultInjector(""))  # unset: no waiting
    assert quiet.faults is None
    quiet.close()


def test_an_uncommitted_save_is_moved_aside_with_a_warning_never_restored(tmp_path, caplog):
    half = tmp_path / "checkpoints" / "5.orbax-checkpoint-tmp-1795985270"  # a run killed during the save of step 5
    (half / "state").mkdir(parents=True)
    (half / "state" / "partial").write_bytes(b"\0" * 10)
    with caplog.at_level(logging.WARNING):
        ckpt = checkpoint.Checkpointer(str(tmp_path))
    moved = tmp_path / "checkpoints_corrupt" / half.name
    assert (moved / "state" / "partial").read_bytes() == b"\0" * 10 and not half.exists()
    assert ckpt.all_steps() == [] and checkpoint_read.all_steps(str(tmp_path)) == []
    message = " ".join(r.getMessage() for r in caplog.records)
    assert f"the save of checkpoint step 5 never committed (the run stopped during it): {half}" in message
    assert f"moving it to {moved} (not deleted)" in message
    ckpt.close()


@pytest.mark.slow
def test_checkpoint_written_before_vocab_padding_is_padded_on_restore(tmp_path, caplog):
    """A state with vocab_size rows (vocab_multiple=1: the layout before padding) resumes into a padded
    model on a tensor-parallel mesh: real rows as saved, padding rows zero, in params and both Adam moments."""
    old_config = _config(**{"model.vocab_multiple": 1})
    _, old, _ = _state(old_config, jax.devices()[:8])
    saved = _perturbed(old, 5)
    ckpt = checkpoint.Checkpointer(str(tmp_path))
    ckpt.save(5, saved)
    ckpt.close()

    config = _config(**{"mesh.data": 4, "mesh.tensor": 2})
    _, fresh, _ = _state(config, jax.devices()[:8])
    vocab, padded = config.model.vocab_size, model_of(config).padded_vocab_size
    assert saved.params["embeddings"]["word_embeddings"].shape[0] == vocab < padded
    with caplog.at_level(logging.WARNING):
        restored, step = checkpoint.Checkpointer(str(tmp_path)).restore_latest(fresh)
    assert step == 5 and "before vocabulary padding" in caplog.text
    assert int(restored.step) == int(saved.step)
    for path, x in jax.tree_util.tree_leaves_with_path(restored.params):
        name = jax.tree_util.keystr(path)
        want = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_leaves_with_path(saved.params)}[name]
        got = np.asarray(x)
        if got.shape != want.shape:
            assert got.shape[0] == padded and ("word_embeddings" in name or "['lm_head']['bias']" in name), name
            np.testing.assert_array_equal(got[:vocab], np.asarray(want), err_msg=name)
            assert not got[vocab:].any(), name
        else:
            np.testing.assert_array_equal(got, np.asarray(want), err_msg=name)
    adam = [s for s in jax.tree.leaves(restored.opt_state, is_leaf=lambda x: hasattr(x, "mu")) if hasattr(s, "mu")]
    old_adam = [s for s in jax.tree.leaves(saved.opt_state, is_leaf=lambda x: hasattr(x, "mu")) if hasattr(s, "mu")]
    for moment in ("mu", "nu"):
        got = getattr(adam[0], moment)["embeddings"]["word_embeddings"]
        assert got.shape[0] == padded and got.sharding == fresh.params["embeddings"]["word_embeddings"].sharding
        np.testing.assert_array_equal(
            np.asarray(got)[:vocab], np.asarray(getattr(old_adam[0], moment)["embeddings"]["word_embeddings"])
        )
        assert not np.asarray(got)[vocab:].any()
    emb = restored.params["embeddings"]["word_embeddings"]
    assert emb.sharding == fresh.params["embeddings"]["word_embeddings"].sharding
    assert {s.data.shape[0] for s in emb.addressable_shards} == {padded // 2}  # split over tensor


class OldTfDataIterator(FakeIterator):
    """Writes what the old tf.data pipeline wrote: a JSON of counters naming a tf.train.Checkpoint."""

    def save(self, directory):
        meta = {"mixture": "xlmp_x", "seed": 0, "batch_size": 8, "process_index": 0, "process_count": 1,
                "batches_seen": 3, "stats": {}, "checkpoint": "input_pipeline-00000-of-00001-1"}  # fmt: skip
        with open(os.path.join(directory, "input_pipeline-00000-of-00001.json"), "w") as f:
            json.dump(meta, f)


def test_old_tfdata_input_state_is_refused_but_the_model_state_restores(tmp_path, state8):
    from data_pipelines.config import default_data_config
    from data_pipelines.input_pipeline import make_train_data

    saved = _perturbed(state8, 3)
    ckpt = checkpoint.Checkpointer(str(tmp_path))
    ckpt.save(3, saved, data=OldTfDataIterator())
    ckpt.close()
    cfg = default_data_config()
    cfg.languages, cfg.seq_length = ("en", "fr"), 32
    cfg.decompress_dir = str(tmp_path / "data")  # the prepared rows
    data = make_train_data(cfg, global_batch_size=8)
    with pytest.raises(
        checkpoint.DataStateError,
        match=r"LegacyDataStateError.*older input pipeline \(format 'tf\.data'.*restore_data=False",
    ):
        checkpoint.Checkpointer(str(tmp_path)).restore_latest(state8, data)
    restored, step = checkpoint.Checkpointer(str(tmp_path)).restore_latest(state8)  # what restore_data=False does
    assert step == 3
    _assert_trees_equal(restored.params, saved.params)
    data.skip_to(step)
    np.testing.assert_array_equal(next(data)["input_ids"], data.batch(3)["input_ids"])
