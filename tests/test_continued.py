"""Continued pre-training from XLM-R (configs/base_from_xlmr.py) on a tiny random XLM-R saved by transformers
as sharded safetensors: exact import, the pool-first phase (encoder bit-identical while the pool moves), each
parameter group on its own schedule, and exact resume of a run with groups."""

import json
import pathlib

import jax
import numpy as np
import pytest
import torch
import transformers
from hf_reference import hf_config, pad_rows

from xlmp_jax import config_utils
from xlmp_jax.model.xlmp import XLMP
from xlmp_jax.training import checkpoint_read, optim, trainer
from xlmp_jax.training.sharding import make_mesh

POOL_FIRST = 3  # the encoder trains from update 3 (step 4) on
STEPS = 6
SEQ = 32


@pytest.fixture(scope="module")
def xlmr_dir(tmp_path_factory, sample_vocab):
    torch.manual_seed(0)
    model = transformers.XLMRobertaForMaskedLM(hf_config(sample_vocab.vocab_size)).eval()
    path = tmp_path_factory.mktemp("xlmr_tiny")
    model.save_pretrained(str(path), max_shard_size="200KB")  # several safetensors files and their index
    assert (path / "model.safetensors.index.json").exists()
    assert len(set(json.loads((path / "model.safetensors.index.json").read_text())["weight_map"].values())) > 1
    return str(path), model


def _recipe(path: str, *extra: str):
    """configs/base_from_xlmr.py shrunk to the tiny checkpoint's shapes (the recipe's groups and schedule as they are)."""
    hf = hf_config(8002)
    overrides = [
        f"init_from_hf={path}",
        f"model.vocab_size={hf.vocab_size}",
        f"model.hidden_size={hf.hidden_size}",
        f"model.num_layers={hf.num_hidden_layers}",
        f"model.num_heads={hf.num_attention_heads}",
        f"model.intermediate_size={hf.intermediate_size}",
        f"model.max_position_embeddings={hf.max_position_embeddings}",
        "model.dtype=float32",
        "model.hidden_dropout=0.0",
        "model.attention_dropout=0.0",
        "model.pool.size=8",
        "model.pool.length=2",
        f"data.seq_length={SEQ}",
        "data.languages=('en','de','fr')",
        "train.batch_size=8",
        f"train.steps={STEPS}",
        "train.warmup_steps=2",
        "train.learning_rate=0.01",
        "train.log_every=1",
        "train.checkpoint_every=1",
        f"train.keep_checkpoints={STEPS}",
        "train.eval_every=0",
        "train.param_groups.pool.warmup_steps=1",
        f"train.param_groups.encoder.trainable_from={POOL_FIRST}",
        "train.param_groups.encoder.warmup_steps=2",
        "train.compilation_cache_dir=",
        *extra,
    ]
    return config_utils.load_run("configs/base_from_xlmr.py", overrides)


def test_pool_off_step0_logits_equal_transformers(xlmr_dir, sample_vocab):
    path, model = xlmr_dir
    run = _recipe(path, "model.pool.enabled=False")
    state, _ = trainer._initial_state(run, optim.make_optimizer(run.train), make_mesh(run.mesh))
    ids, mask = pad_rows([sample_vocab.encode_with_specials(s) for s in ("Hello world.", "Hallo Welt, wie geht's?")], 1)
    ours = np.asarray(jax.jit(lambda p: XLMP(run.model).apply({"params": p}, ids, mask)["logits"])(state.params))
    with torch.no_grad():
        ref = model(input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask).long()).logits.numpy()
    vocab = run.model.vocab_size
    assert np.abs(ours[..., :vocab] - ref)[mask.astype(bool)].max() <= 1e-5


def _encoder(params):
    return {k: v for k, v in params.items() if k != "pool"}


@pytest.fixture(scope="module")
def straight(xlmr_dir, tmp_path_factory):
    """The recipe run straight through: its work directory and what it printed."""
    import contextlib
    import io

    workdir = str(tmp_path_factory.mktemp("straight") / "run")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        trainer.train(_recipe(xlmr_dir[0]), workdir)
    return workdir, printed.getvalue()


@pytest.mark.slow
def test_pool_first_phase_then_joint_each_group_on_its_schedule(xlmr_dir, straight):
    path, model = xlmr_dir
    run = _recipe(path)
    workdir, out = straight
    assert "param group pool (pool/.*):" in out and "param group encoder ((?!pool/).*):" in out
    assert "frozen for updates 0-2" in out and "step 4: parameter groups frozen now: none" in out

    # the imported encoder is bit-equal to the checkpoint's tensors, and stays so through the pool-first phase
    hf_state = {k: v.numpy() for k, v in model.state_dict().items()}
    _, before, _ = checkpoint_read.load_params(workdir, step=POOL_FIRST)
    for ours_name, hf_name in (
        (("embeddings", "word_embeddings"), "roberta.embeddings.word_embeddings.weight"),
        (("layer_1", "intermediate", "kernel"), "roberta.encoder.layer.1.intermediate.dense.weight"),
    ):
        leaf = before
        for key in ours_name:
            leaf = leaf[key]
        want = hf_state[hf_name]
        got = np.asarray(leaf)[: want.shape[0]] if ours_name[0] == "embeddings" else np.asarray(leaf).T
        np.testing.assert_array_equal(got, want)
    _, initial, _ = checkpoint_read.load_params(workdir, step=1)
    jax.tree.map(np.testing.assert_array_equal, _encoder(before), _encoder(initial))  # frozen: bit-identical
    assert not np.array_equal(initial["pool"]["keys"], before["pool"]["keys"])  # while the pool moved
    # joint from update POOL_FIRST on (its warm-up starts at 0, so it moves from the update after): every tensor
    _, after, _ = checkpoint_read.load_params(workdir, step=POOL_FIRST + 2)
    moved = jax.tree.map(lambda a, b: bool(np.any(a != b)), _encoder(after), _encoder(before))
    assert all(jax.tree.leaves(moved)), moved

    # each group's logged learning rate follows its own warm-up and decay, in the run's update count
    logged = {}
    for line in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        logged[record["step"]] = record
    lr = run.train.learning_rate
    pool_peak, pool_span = 10 * lr, STEPS  # pool: 10x, warm-up 1, decays to 0 at update STEPS
    for step in range(1, STEPS + 1):
        n = step - 1  # the update this step applies
        pool = pool_peak * (n / 1 if n < 1 else (1 - (n - 1) / (pool_span - 1)))
        m = n - POOL_FIRST  # the encoder's own count
        encoder = 0.0 if m < 0 else lr * (m / 2 if m < 2 else (1 - (m - 2) / (STEPS - POOL_FIRST - 2)))
        np.testing.assert_allclose(logged[step]["learning_rate/pool"], pool, rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose(logged[step]["learning_rate/encoder"], encoder, rtol=1e-5, atol=1e-9)


@pytest.mark.slow
def test_a_run_with_groups_resumes_exactly(xlmr_dir, straight, tmp_path):
    path, _ = xlmr_dir
    resumed = str(tmp_path / "resumed")
    trainer.train(_recipe(path, f"train.stop_after={POOL_FIRST - 1}"), resumed)  # stops in the pool-first phase
    trainer.train(_recipe(path), resumed)  # resumes, crosses into the joint phase
    _, a, _ = checkpoint_read.load_params(straight[0])
    _, b, _ = checkpoint_read.load_params(resumed)
    jax.tree.map(np.testing.assert_array_equal, a, b)


def test_groups_change_on_resume_is_refused_naming_both(xlmr_dir, tmp_path):
    workdir = str(tmp_path / "run")
    trainer.train(_recipe(xlmr_dir[0], "train.stop_after=1"), workdir)  # one checkpoint, with the recipe's groups
    with pytest.raises(trainer.TrainError, match="this run has .*encoder: '\\(\\?!pool/\\)\\.\\*' frozen") as e:
        trainer.train(_recipe(xlmr_dir[0], "train.param_groups.encoder.frozen=True"), workdir)
    assert "encoder: '(?!pool/).*' starts later" in str(e.value)  # the checkpoint's groups, named too
