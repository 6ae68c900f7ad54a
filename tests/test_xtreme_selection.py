"""Model selection on English dev, fine-tuning seeds and their intervals, the data-parallel fine-tune, and
configs/xtreme.py end to end (with a resumed second run) on tiny random models."""

from __future__ import annotations

import functools
import os
import pathlib
import sys

import flax.linen as nn
import jax
import numpy as np
import pytest
from helpers import REPO
from test_evaluate import FakeCheckpoints, _run, _wait, small_config
from test_qa import QA_TINY, qa_fixture

from xlmp_jax import evals as registry
from xlmp_jax import evaluate
from xlmp_jax.evals import finetune, seeds, selection, transfer_data, xtreme_summary
from xlmp_jax.evals.results import Result, ResultStore
from xlmp_jax.hf.encoder import Encoder
from xlmp_jax.model.xlmp import init_params


@pytest.fixture(scope="module")
def tiny_params():
    init = {p: jax.jit(functools.partial(init_params, small_config(p))) for p in (True, False)}
    return {p: jax.device_get(nn.unbox(init[p](jax.random.key(int(p))))["params"]) for p in (True, False)}


# ------------------------------------------------------------------------------------------- selection


def test_selection_reports_the_dev_best_step_not_the_last():
    """A deterministic fake trainer: its 'parameters' are the step count; dev peaks at step 4 and the last
    step (8) is worse on dev (though better on test): the test scores reported are step 4's."""
    dev_by_step = {2: 0.50, 4: 0.90, 6: 0.70, 8: 0.60}
    test_by_step = {2: {"de": 0.40}, 4: {"de": 0.55}, 6: {"de": 0.60}, 8: {"de": 0.70}}
    state = {"step": 0}
    advanced = []

    def advance(n):
        advanced.append(n)
        state["step"] += n

    chosen = selection.train_with_selection(
        advance, lambda: dev_by_step[state["step"]], lambda: dict(state), steps=8, eval_every=2
    )
    assert advanced == [2, 2, 2, 2] and state["step"] == 8
    assert (chosen.step, chosen.dev_score, chosen.snapshot) == (4, 0.90, {"step": 4})
    assert chosen.history == ((2, 0.5), (4, 0.9), (6, 0.7), (8, 0.6))
    assert test_by_step[chosen.snapshot["step"]] == {"de": 0.55}  # what the task reports
    assert selection.eval_steps(10, 4) == [4, 8, 10] and selection.eval_steps(5, 0) == [5]
    with pytest.raises(ValueError, match="eval_every=-1"):
        selection.eval_steps(5, -1)
    rows = selection.task_rows(selection.TaskScores("f1", {"de": 0.5, "fr": 0.7}, dev_score=0.8, best_step=4))
    assert rows == [("de", "f1", 0.5), ("fr", "f1", 0.7), ("all", "f1", pytest.approx(0.6)),
                    ("en", "dev_f1", 0.8), ("en", "best_step", 4.0)]  # fmt: skip


def test_finetuner_keeps_the_dev_best_parameters(tiny_params):
    """Through the real fine-tuner: dev is scripted to peak after step 2 of 3; the parameters left for
    prediction are exactly those of step 2, and the zero-shot rows report the selection."""
    encoder = Encoder(small_config(True), tiny_params[True], batch_size=4, max_length=16)
    settings = finetune.FinetuneSettings(steps=3, batch_size=4, max_length=16, learning_rate=1e-3, eval_every=1)
    tuner = finetune.FineTuner(encoder, "tagging", 3, settings)
    rng = np.random.default_rng(0)
    rows = [[0, *rng.integers(5, 500, 6).tolist(), 2] for _ in range(8)]
    labels = rng.integers(0, 3, (8, 16)).astype(np.int32)
    seen, script = [], iter([0.2, 0.9, 0.3])

    def dev_score():
        seen.append(jax.device_get(tuner.params))
        return next(script)

    chosen = tuner.fit_selected(rows, labels, dev_score)
    assert chosen.step == 2 and len(tuner.losses) == 3
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(tuner.params), seen[1])
    assert not np.array_equal(seen[1]["head"]["kernel"], seen[2]["head"]["kernel"])


# ------------------------------------------------------------------------------------------------ seeds


def test_seed_spread_matches_hand_computed_t_interval():
    s = seeds.spread([0.70, 0.72, 0.74])
    # mean 0.72, std (ddof=1) 0.02, t_{0.975, 2} = 4.302653: half-width 4.302653 * 0.02 / sqrt(3) = 0.049683
    assert (s.mean, s.std, s.n) == (pytest.approx(0.72), pytest.approx(0.02), 3)
    assert s.half_width == pytest.approx(0.049683, abs=1e-6)
    assert (s.low, s.high) == (pytest.approx(0.72 - 0.049683, abs=1e-6), pytest.approx(0.72 + 0.049683, abs=1e-6))
    one = seeds.spread([0.5])
    assert one.mean == 0.5 and np.isnan(one.std) and one.n == 1
    with pytest.raises(ValueError, match="no values"):
        seeds.spread([])
    with pytest.raises(ValueError, match="non-finite"):
        seeds.spread([0.1, float("nan")])


def test_arm_difference_pairs_pretraining_seeds_else_labels_finetuning_noise():
    # Two pre-training seeds per arm: per pair, XLM-P's seed mean minus the baseline's: 0.81-0.76, 0.79-0.75.
    two = seeds.arm_difference([[0.80, 0.82], [0.78, 0.80]], [[0.75, 0.77], [0.76, 0.74]])
    assert two.over == seeds.PRETRAINING == "pre-training seeds"
    # deltas 0.05, 0.04: mean 0.045, std 0.0070711, t_{0.975, 1} = 12.7062: half 12.7062 * 0.0070711 / sqrt 2
    assert two.spread.mean == pytest.approx(0.045) and two.spread.half_width == pytest.approx(0.063531, abs=1e-5)
    # One run per arm: fine-tuning seeds pair by index; the interval is labelled fine-tuning noise only.
    one = seeds.arm_difference([[0.80, 0.82, 0.81]], [[0.75, 0.80, 0.77]])
    assert one.over == seeds.FINETUNING_NOISE == "fine-tuning noise only"
    assert one.spread.mean == pytest.approx(np.mean([0.05, 0.02, 0.04])) and one.spread.n == 3
    assert seeds.arm_difference([[0.8]], [[0.7]]).over == seeds.NO_INTERVAL
    with pytest.raises(ValueError, match="XLM-P has 2 work directories and the baseline 1"):
        seeds.arm_difference([[0.8], [0.7]], [[0.7]])


# -------------------------------------------------------------------------------------------- sharding


@pytest.mark.slow
def test_data_parallel_finetune_equals_one_device(tiny_params):
    assert len(jax.local_devices()) == 8  # tests/conftest.py
    encoder = Encoder(small_config(True), tiny_params[True], batch_size=8, max_length=16)
    rng = np.random.default_rng(1)
    rows = [[0, *rng.integers(5, 500, int(rng.integers(3, 12))).tolist(), 2] for _ in range(20)]
    labels = rng.integers(0, 2, 20).astype(np.int32)
    out = {}
    for devices in (1, 8):
        settings = finetune.FinetuneSettings(steps=3, batch_size=8, max_length=16, learning_rate=1e-3, devices=devices)
        tuner = finetune.FineTuner(encoder, "classification", 2, settings)
        losses = tuner.fit(rows, labels)
        logits = tuner._logits(tuner.params, tuner._batch(finetune.pad_rows(rows[:8], 16, 1)), None)
        out[devices] = (losses, np.asarray(logits), jax.device_get(tuner.params["head"]["kernel"]))
        if devices == 8:
            assert tuner.mesh is not None and tuner.mesh.devices.size == 8
            assert len(tuner.params["head"]["kernel"].sharding.device_set) == 8
    np.testing.assert_allclose(out[1][0], out[8][0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out[1][1], out[8][1], rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(out[1][2], out[8][2], rtol=1e-3, atol=1e-5)
    assert finetune.finetune_mesh(12, 0).devices.size == 6  # the most devices (of 8) dividing the batch
    assert dict(finetune.finetune_mesh(8, 8, shard_params=True).shape) == {"data": 1, "fsdp": 8, "tensor": 1}
    with pytest.raises(ValueError, match="batch_size=12 is not divisible by devices=8"):
        finetune.finetune_mesh(12, 8)


@pytest.mark.slow
def test_fsdp_finetune_splits_the_encoder_and_equals_one_device(tiny_params):
    encoder = Encoder(small_config(True), tiny_params[True], batch_size=8, max_length=16)
    rng = np.random.default_rng(2)
    rows = [[0, *rng.integers(5, 500, int(rng.integers(3, 12))).tolist(), 2] for _ in range(20)]
    labels = rng.integers(0, 2, 20).astype(np.int32)
    out = {}
    for devices, split in ((1, False), (8, True)):
        settings = finetune.FinetuneSettings(
            steps=3, batch_size=8, max_length=16, learning_rate=1e-3, devices=devices, shard_params=split
        )
        tuner = finetune.FineTuner(encoder, "classification", 2, settings)
        losses = tuner.fit(rows, labels)
        out[devices] = (losses, jax.device_get(tuner.params))
        if split:  # the word embeddings and their Adam moments are split over the 8 devices, not copied
            embeddings = tuner.params["encoder"]["embeddings"]["word_embeddings"]
            shard = embeddings.addressable_shards[0].data.shape
            assert shard[1] * 8 == embeddings.shape[1], (shard, embeddings.shape)
            moments = [x for x in jax.tree.leaves(tuner._opt_state) if x.shape == embeddings.shape]
            assert moments and all(m.addressable_shards[0].data.shape == shard for m in moments)
    np.testing.assert_allclose(out[1][0], out[8][0], rtol=1e-4, atol=1e-5)
    for a, b in zip(jax.tree.leaves(out[1][1]), jax.tree.leaves(out[8][1]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


# ------------------------------------------------------------------------------------ configs/xtreme.py

CONLLU = "".join(
    f"# sent_id = {n}\n"
    + "".join(f"{i}\t{w}\t{w}\t{t}\t_\t_\t0\tdep\t_\t_\n" for i, (w, t) in enumerate(words, start=1))
    + "\n"
    for n, words in enumerate(
        [[("The", "DET"), ("cat", "NOUN"), ("sleeps", "VERB")], [("A", "DET"), ("dog", "NOUN"), ("runs", "VERB")]]
    )
)


def xtreme_fixture(root: pathlib.Path) -> dict[str, str]:
    """Tiny local data for every task of configs/xtreme.py."""
    sentences = ["the cat sleeps", "a dog runs fast", "Paris is big", "we eat 3 apples", "they sing", "I read"]
    for task in ("xnli", "pawsx"):
        folder = root / task
        folder.mkdir(parents=True)
        lines = "".join(f"{chr(9).join(e.texts)}\t{e.label}\n" for e in transfer_data.derived_classification(sentences))
        for name in ("train", "test-de", "test-fr"):
            (folder / f"{name}.tsv").write_text(lines, encoding="utf-8")
    ner = root / "ner"
    ner.mkdir()
    conll = "Paris\tB-LOC\nis\tO\nbig\tO\n\nJohn\tB-PER\nSmith\tI-PER\nsings\tO\n\n"
    for name in ("train", "dev", "test-de", "test-fr"):
        (ner / f"{name}.conll").write_text(conll, encoding="utf-8")
    pos = root / "pos"
    pos.mkdir()
    for name in ("train", "test-fr"):
        (pos / f"{name}.conllu").write_text(CONLLU, encoding="utf-8")
    bucc = root / "bucc"
    bucc.mkdir()
    for split, prefix in (("sample", "a"), ("training", "b")):
        words, english = ["chat", "chien", "maison", "arbre"], ["cat", "dog", "house", "tree"]
        (bucc / f"fr-en.{split}.fr").write_text("".join(f"fr-{prefix}{i}\tle {w}\n" for i, w in enumerate(words)))
        (bucc / f"fr-en.{split}.en").write_text("".join(f"en-{prefix}{i}\tthe {w}\n" for i, w in enumerate(english)))
        (bucc / f"fr-en.{split}.gold").write_text("".join(f"fr-{prefix}{i}\ten-{prefix}{i}\n" for i in range(2)))
    tatoeba = root / "tatoeba"
    tatoeba.mkdir()
    (tatoeba / "tatoeba.fra-eng.fra").write_text("le chat\nle chien\nla maison\n")
    (tatoeba / "tatoeba.fra-eng.eng").write_text("the cat\nthe dog\nthe house\n")
    (root / "en-de.tsv").write_text("the cat\tdie Katze\nthe dog\tder Hund\nthe house\tdas Haus\n")
    qa_fixture(root / "qa")  # XTREME's download folder for xquad, mlqa and tydiqa
    return {name: str(root / name) for name in ("xnli", "pawsx", "ner", "pos", "bucc", "tatoeba", "qa")} | {
        "retrieval": str(root / "en-de.tsv")
    }


QA_TASKS = ("xquad", "mlqa", "tydiqa")


def xtreme_config(tmp_path: pathlib.Path, workdirs: list[str], data: dict[str, str]):
    sys.path.insert(0, str(REPO))
    from configs import xtreme

    c = xtreme.get_config()
    c.workdirs = ",".join(str(tmp_path / w) for w in workdirs)
    c.out = str(tmp_path / "out")
    c.progress = False
    c.tensorboard = False
    for task in ("xnli", "pawsx", "ner", "pos"):
        c[task].update(dict(local_dir=data[task], steps=2, eval_every=1, batch_size=4, max_length=16, seeds=2))
        c[task].devices = 1  # the sharded fine-tune has its own test; one device keeps this one quick
    for task in QA_TASKS:  # one fine-tuning seed each: seeds as cells are the transfer tasks' to show
        c[task].update(dict(dir=data["qa"], languages="en,de,zh", seeds=1, **QA_TINY))
    c.bucc.update(dict(dir=data["bucc"], languages=""))
    c.tatoeba.dir = data["tatoeba"]
    c.retrieval.tsv = data["retrieval"]
    return c


@pytest.mark.slow
def test_xtreme_config_end_to_end_then_resumes(tmp_path, tiny_params):
    workdirs = ["xlmp_s0", "xlmp_s1", "base_s0", "base_s1"]
    for w in workdirs:
        (tmp_path / w).mkdir()
    data = xtreme_fixture(tmp_path / "data")
    config = xtreme_config(tmp_path, workdirs, data)
    tasks = evaluate.split_list(config.evals)
    assert tasks == ["xnli", "pawsx", "pos", "ner", "xquad", "mlqa", "tydiqa", "bucc", "tatoeba", "retrieval"]
    calls = []

    def counting(task):
        run = registry.load(evaluate.eval_module(config, task)).run

        def wrapped(ctx, cfg):
            calls.append((os.path.basename(ctx.workdir), task, ctx.seed))
            return run(ctx, cfg)

        return wrapped

    evals = {task: counting(task) for task in tasks}
    available = {w: (w.startswith("xlmp"), [100, 200]) for w in workdirs}
    source = FakeCheckpoints(tiny_params, available)
    first = evaluate.run_sweep(config, evals=evals, checkpoints=source)
    cells = 4 * (4 * 2 + 3 + 3)  # per work directory: 4 transfer tasks x 2 seeds, 3 QA x 1, 3 embedding tasks
    assert (first["computed"], first["skipped"]) == (cells, 0) and len(calls) == cells
    assert ("xlmp_s0", "xnli", 1) in calls and ("base_s1", "bucc", None) in calls
    rows = ResultStore(config.out).rows
    assert {r.step for r in rows} == {200}  # steps='latest'
    picked = {(r.workdir, r.eval, r.seed): r.value for r in rows if r.metric == "best_step"}
    assert set(picked.values()) <= {1.0, 2.0, 3.0} and len(picked) == 4 * (4 * 2 + 3)
    assert {r.seed for r in rows if r.eval == "ner"} == {0, 1}

    summary = pathlib.Path(first["summary"]).read_text()
    header = "| arm | run | xnli (accuracy) | pawsx (accuracy) | pos (accuracy) | ner (f1) | xquad (f1) | mlqa (f1) | "
    header += "tydiqa (f1) | bucc (f1) | "
    assert header + "tatoeba (acc_mean) | retrieval (acc_mean) | avg |" in summary
    lines = summary.splitlines()
    assert any(line.startswith("| XLM-P | xlmp_s0 | ") for line in lines)
    assert any(line.startswith("| baseline | mean of 2 pre-training seeds | ") for line in lines)
    difference = next(line for line in lines if line.startswith("| XLM-P - baseline | | "))
    assert difference.count("[") == 11  # every task and the average: an interval over the two pairs
    assert "| interval over | | " + " | ".join(["pre-training seeds (n=2)"] * 11) + " |" in summary
    for task in tasks:
        assert f"## {task} (" in summary
    assert "| arm | run | de | fr | mean | en dev | seeds |" in summary  # xnli's per-language table
    assert "| arm | run | de | en † | zh | mean | en dev | seeds |" in summary  # xquad: en is SQuAD dev
    assert "| arm | run | de | en | zh | mean | en dev | seeds |" in summary  # mlqa: en is a test language

    # A second run finds every cell and computes nothing: no eval called, no checkpoint loaded.
    loads = len(source.loads)
    second = evaluate.run_sweep(config, evals=evals, checkpoints=source)
    assert (second["computed"], second["skipped"]) == (0, cells)
    assert len(calls) == cells and len(source.loads) == loads
    assert pathlib.Path(second["summary"]).read_text() == summary


def test_xtreme_summary_with_one_run_per_arm_labels_finetuning_noise():
    rows = [
        Result(f"/w/{w}", 1, model, "xnli", lang, "accuracy", value, seed)
        for w, model, base in (("x", "xlmp", 0.8), ("b", "baseline", 0.7))
        for seed, noise in ((0, 0.0), (1, 0.02), (2, -0.01))
        for lang, value in (("de", base + noise), ("fr", base + noise + 0.1))
    ]
    text = xtreme_summary.render(rows, ["xnli"], {"xnli": "accuracy"}, ["/w/x", "/w/b"])
    # task means per seed (0.85, 0.87, 0.84): mean 85.3, std 1.5; the average column is over tasks (one value)
    assert "| XLM-P | x | 85.3 ± 1.5 | 85.3 |" in text
    assert "| XLM-P - baseline | | +10.0 [+10.0, +10.0] | +10.0 |" in text
    assert "fine-tuning noise only (n=3)" in text
    with pytest.raises(ValueError, match="no metric for task 'ner'"):
        xtreme_summary.parse_headline("xnli:accuracy", ["xnli", "ner"])


def test_xtreme_summary_leaves_english_dev_test_sets_out_of_the_mean():
    rows = [Result("/w/x", 1, "xlmp", "xquad", lang, "f1", v, 0) for lang, v in (("en", 0.9), ("de", 0.5), ("zh", 0.3))]
    rows.append(Result("/w/x", 1, "xlmp", "xquad", "en", "in_english_dev", 1.0, 0))
    text = xtreme_summary.render(rows, ["xquad"], {"xquad": "f1"}, ["/w/x"])
    assert "| XLM-P | x | 40.0 | 40.0 |" in text  # (50 + 30) / 2: XQuAD-en is shown, not averaged
    assert "| arm | run | de | en † | zh | mean | en dev | seeds |" in text
    assert "| XLM-P | x | 50.0 | 90.0 | 30.0 | 40.0 |  | 1 |" in text


def write_workdir(workdir: pathlib.Path, params, pool: bool) -> None:
    """A work directory holding one checkpoint (step 1) of random ``params``, as the eval CLI reads it."""
    import dataclasses

    import ml_collections

    from xlmp_jax.training import checkpoint

    config = ml_collections.ConfigDict({"model": dataclasses.asdict(small_config(pool)), "data": {}})
    saver = checkpoint.Checkpointer(str(workdir), async_save=False)
    saver.save(1, {"params": params}, config=config)
    saver.close()


@pytest.mark.slow
def test_xtreme_config_from_the_command_line(tmp_path, tiny_params):
    """``python -m xlmp_jax.evaluate --config=configs/xtreme.py`` on fixture data for every task, one
    fine-tuning seed, on a tiny random work directory: summary.md has XTREME's nine task columns. (The
    baseline arm, seeds as cells and resuming are the in-process test's above: one subprocess is enough.)"""
    data = xtreme_fixture(tmp_path / "data")
    write_workdir(tmp_path / "xlmp", tiny_params[True], pool=True)
    env = {**os.environ, "XLMP_NUM_CPU_DEVICES": "1", "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
    env["XLA_FLAGS"] = env.get("XLA_FLAGS", "").replace("--xla_force_host_platform_device_count=8", "").strip()
    env["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path / "jax_cache")
    out = tmp_path / "out"
    flags = [f"--config.workdirs={tmp_path / 'xlmp'}", f"--config.out={out}"]
    flags += ["--config.evals=xnli,pawsx,pos,ner,xquad,mlqa,tydiqa,bucc,tatoeba", "--config.progress=False"]
    for task in ("xnli", "pawsx", "ner", "pos"):
        settings = dict(local_dir=data[task], steps=2, eval_every=1, batch_size=4, max_length=16, seeds=1)
        flags += [f"--config.{task}.{key}={value}" for key, value in settings.items()]
    for task in QA_TASKS:
        settings = dict(dir=data["qa"], languages="en,de,zh", **{**QA_TINY, "steps": 2, "seeds": 1})
        flags += [f"--config.{task}.{key}={value}" for key, value in settings.items()]
    flags += [
        f"--config.bucc.dir={data['bucc']}",
        "--config.bucc.languages=",
        f"--config.tatoeba.dir={data['tatoeba']}",
    ]
    output = _wait(_run(["-m", "xlmp_jax.evaluate", "--config=configs/xtreme.py", *flags], env))
    assert '"computed": 9' in output  # 9 tasks x 1 seed
    summary = (out / "summary.md").read_text()
    columns = "xnli (accuracy) | pawsx (accuracy) | pos (accuracy) | ner (f1) | xquad (f1) | mlqa (f1) | tydiqa (f1)"
    assert f"| arm | run | {columns} | bucc (f1) | tatoeba (acc_mean) | avg |" in summary
    line = next(line for line in summary.splitlines() if line.startswith("| XLM-P | xlmp | "))
    cells = line.removesuffix(" |").split(" | ")[2:]
    assert len(cells) == 10 and all(cell.strip() for cell in cells)  # nine task columns and the average
    assert "## tydiqa (f1)" in summary and "| arm | run | de | en † | zh | mean | en dev | seeds |" in summary
