"""Eval sweeps (xlmp_jax.evaluate, xlmp_jax.evals): metrics on hand-made cases, sweep skipping, the result
table, bad input, and an end-to-end run of the CLI on checkpoints written by the train CLI."""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import os
import pathlib
import re
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from helpers import REPO

from data_pipelines import languages as language_table
from xlmp_jax import evaluate
from xlmp_jax.evals import clustering, finetune, heldout, mlm, pool_analysis, retrieval, transfer, transfer_data
from xlmp_jax.evals.results import COLUMNS, ResultStore, markdown_summary
from xlmp_jax.hf.encoder import Encoder, resolve_layer
from xlmp_jax.model.model_config import ModelConfig
from xlmp_jax.model.prompt_pool import PoolConfig
from xlmp_jax.model.xlmp import XLMP, init_params

SMALL_POOL = PoolConfig(size=8, length=2)


def small_config(pool: bool) -> ModelConfig:
    return ModelConfig.preset("tiny", pool=SMALL_POOL if pool else False, hidden_dropout=0.0, attention_dropout=0.0)


@pytest.fixture(scope="module")
def tiny_params():
    """{True: XLM-P params, False: baseline params} of the tiny architecture (random init)."""
    init = {p: jax.jit(functools.partial(init_params, small_config(p))) for p in (True, False)}
    return {p: jax.device_get(nn.unbox(init[p](jax.random.key(int(p))))["params"]) for p in (True, False)}


@pytest.fixture(scope="module")
def encoder(tiny_params):
    return Encoder(small_config(True), tiny_params[True], batch_size=8, max_length=32)


def random_rows(rng: np.random.Generator, count: int, low: int = 5, high: int = 30) -> list[list[int]]:
    return [[0, *rng.integers(4, 8000, int(rng.integers(low, high))).tolist(), 2] for _ in range(count)]


# ------------------------------------------------------------------------------------------- retrieval


def test_top1_accuracy_hand_made_both_directions():
    source = np.array([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0]])
    target = np.array([[1.0, 0.0], [0.0, 1.0], [0.2, 1.0]])
    # source->target: s0->t0 right; s1 is nearest t0 (wrong); s2 is nearest t1 (wrong): 1/3.
    # target->source: t0->s0 right; t1 is nearest s2 (wrong); t2 is nearest s2 (right): 2/3.
    forward, backward = retrieval.top1_accuracy(source, target)
    assert forward == pytest.approx(1 / 3)
    assert backward == pytest.approx(2 / 3)
    # cosine, not dot product: rescaling rows changes nothing.
    assert retrieval.top1_accuracy(source * [[5.0], [0.1], [3.0]], target) == (forward, backward)


def test_retrieval_is_perfect_when_embeddings_match(encoder):
    rng = np.random.default_rng(0)
    scale = rng.uniform(0.5, 2.0, (20, 1))
    vectors = rng.normal(size=(20, 16))
    assert retrieval.top1_accuracy(vectors, vectors * scale + 1e-6 * rng.normal(size=(20, 16))) == (1.0, 1.0)
    # Through the model: the same token rows on both sides embed identically (padding does not leak in).
    rows = random_rows(rng, 12)
    shuffled = [rows[i] for i in rng.permutation(len(rows))]
    a = encoder.embed_ids(rows)["embedding"]
    b = encoder.embed_ids(rows + shuffled)["embedding"][: len(rows)]
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert retrieval.top1_accuracy(a, b) == (1.0, 1.0)


@pytest.mark.slow
def test_embed_ids_gives_each_row_its_own_outputs_whatever_the_batching(encoder, tiny_params):
    """Rows are batched longest first and put back in order: each row's outputs match a direct forward
    pass of that row alone (layer 1 mean-pooled over its tokens; the pool's own query and weights)."""
    rng = np.random.default_rng(3)
    rows = random_rows(rng, 11, low=1, high=29)  # 11 rows in batches of 8: a padded last batch
    out = encoder.embed_ids(rows, layer=1)
    assert out["embedding"].shape == (11, encoder.config.hidden_size) and out["weights"].shape == (11, 8)
    model = XLMP(encoder.config)
    # Jitted (one small program per row length): the eager apply spends ~2 s a row dispatching ops.
    forward = jax.jit(
        lambda ids: model.apply({"params": tiny_params[True]}, ids, jnp.ones_like(ids), output_hidden_states=True)
    )
    for i, row in enumerate(rows):
        ref = forward(np.asarray([row], np.int32))
        np.testing.assert_allclose(out["embedding"][i], np.mean(ref["all_hidden_states"][1][0], axis=0), atol=1e-5)
        np.testing.assert_allclose(out["query"][i], ref["pool"]["query"][0], atol=1e-5)
        np.testing.assert_allclose(out["weights"][i], ref["pool"]["weights"][0], atol=1e-5)
    baseline = Encoder(small_config(False), tiny_params[False], batch_size=8, max_length=32)
    plain = baseline.embed_ids(rows, layer=0)
    np.testing.assert_array_equal(plain["query"], plain["embedding"])  # the baseline's query: layer 0 pooled
    with pytest.raises(ValueError, match="no tokenizer"):
        baseline.encode(["Hello"])


def test_layer_selection():
    assert resolve_layer("middle", 12) == 6
    assert resolve_layer("last", 12) == 12
    assert resolve_layer("8", 12) == 8
    assert resolve_layer(-1, 2) == 2
    with pytest.raises(ValueError, match="layer=13"):
        resolve_layer(13, 12)
    with pytest.raises(ValueError, match="'top'"):
        resolve_layer("top", 12)


def test_read_pairs_rejects_a_bad_line(tmp_path):
    good = tmp_path / "en-de.tsv"
    good.write_text("Hello\tHallo\nGood day\tGuten Tag\n", encoding="utf-8")
    assert retrieval.read_pairs(str(good)) == (["Hello", "Good day"], ["Hallo", "Guten Tag"])
    bad = tmp_path / "en-fr.tsv"
    bad.write_text("Hello\tBonjour\nno tab here\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"en-fr\.tsv:2: .*'no tab here'"):
        retrieval.read_pairs(str(bad))
    with pytest.raises(FileNotFoundError, match="missing.tsv"):
        retrieval.read_pairs(str(tmp_path / "missing.tsv"))


# --------------------------------------------------------------------------------------- pool analysis


def test_nmi_on_known_assignments():
    labels = [0, 0, 1, 1]
    assert pool_analysis.nmi(labels, [1, 1, 0, 0]) == pytest.approx(1.0)
    assert pool_analysis.nmi(labels, [0, 1, 0, 1]) == pytest.approx(0.0, abs=1e-12)
    # By hand: H(labels) = ln 2, H(assignment) = H(3/4, 1/4), MI = 1/2 ln(4/3) + 1/4 ln(2/3) + 1/4 ln 2,
    # NMI = MI / mean of the entropies.
    h_a = -(0.75 * np.log(0.75) + 0.25 * np.log(0.25))
    mi = 0.5 * np.log(4 / 3) + 0.25 * np.log(2 / 3) + 0.25 * np.log(2)
    assert pool_analysis.nmi(labels, [0, 0, 0, 1]) == pytest.approx(mi / ((np.log(2) + h_a) / 2))
    # k-means recovers well-separated language clusters exactly.
    rng = np.random.default_rng(0)
    centres = np.eye(3) * 10
    labels = np.repeat(np.arange(3), 10)
    points = centres[labels] + rng.normal(scale=0.1, size=(30, 3))
    assert pool_analysis.kmeans_nmi(points, labels, 3) == pytest.approx(1.0)


def _assert_png(path: str) -> None:
    import matplotlib.image

    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


@pytest.mark.slow
def test_pool_analysis_plots_and_scores(tmp_path):
    rng = np.random.default_rng(0)
    languages = ["en", "de", "fr"]
    labels = np.repeat(np.arange(3), 6)
    weights = rng.dirichlet(np.ones(8), size=18) * 0.2
    weights[np.arange(18), labels * 2] += 0.8  # language i mostly retrieves prompt 2i
    query = np.eye(3)[labels] + rng.normal(scale=0.05, size=(18, 3))
    repeats = pool_analysis.Repeats(shuffles=100, resamples=50, mantel_permutations=99)
    rows = pool_analysis.analyse(weights, query, labels, languages, str(tmp_path / "xlmp"), repeats=repeats)
    values = {(lang, metric): v for lang, metric, v in rows}
    assert values[("all", "nmi_argmax_prompt")] == pytest.approx(1.0)
    assert values[("all", "ami_prompt_language")] == pytest.approx(1.0)
    assert values[("all", "ami_prompt_language_p_value")] == pytest.approx(1 / 101)
    assert values[("all", "ami_prompt_language_shuffled_p99")] < 1.0
    assert values[("all", "nmi_kmeans_query")] == pytest.approx(1.0)
    assert values[("all", "ami_kmeans_query")] == pytest.approx(1.0)
    assert values[("all", "prompts_used")] == 3 and values[("all", "pool_fraction_top")] == pytest.approx(3 / 8)
    assert 3 < values[("all", "effective_prompts")] < 8  # 3 main prompts plus the 0.2 of Dirichlet noise
    assert [values[(lang, "top_prompt")] for lang in languages] == [0.0, 2.0, 4.0]
    # en, de, fr are all Latin-script Indo-European: no script AMI, no script / family Mantel test; the
    # branch (Germanic, Germanic, Romance) varies, but 3 languages have only 3! = 6 relabellings.
    assert ("all", "ami_prompt_script") not in values and ("all", "mantel_r_script") not in values
    assert ("all", "mantel_r_family") not in values and ("all", "mantel_r_branch") in values
    mean = np.load(tmp_path / "xlmp" / "mean_weights.npy")
    np.testing.assert_allclose(mean[1], weights[labels == 1].mean(axis=0))
    js = np.load(tmp_path / "xlmp" / "routing_js_distance.npy")
    assert js.shape == (3, 3) and js[0, 1] > 0.5 and np.all(np.diag(js) == 0)
    for name in ("weights_heatmap", "query_centroids", "routing_similarity", "routing_dendrogram"):
        _assert_png(str(tmp_path / "xlmp" / f"{name}.png"))
    assert values[("all", "ami_kmeans_query_kpool_language")] < 1.0  # 8 clusters of 3 languages
    assert ("all", "ami_random_keys_language") in values and ("all", "ami_script_language") not in values  # one script
    # The baseline has no pool: the k-means scores, the query references at k = languages and the centroid plot.
    rows = pool_analysis.analyse(None, query, labels, languages, str(tmp_path / "base"))
    names = {metric for _, metric, _ in rows}
    assert {"nmi_kmeans_query", "ami_kmeans_query", "ami_kmeans_query_klang_language_shuffled_p99"} <= names
    assert not any("random_keys" in n or "kpool" in n or "prompt" in n for n in names)
    assert not (tmp_path / "base" / "weights_heatmap.png").exists()
    _assert_png(str(tmp_path / "base" / "query_centroids.png"))


def test_pool_analysis_finds_script_routing_across_sample_languages(tmp_path):
    """Planted routing: each script has its own prompt, languages of one script share it. Routing then
    follows script (AMI 1, Mantel p at its floor), not language; a language without text is left out."""
    rng = np.random.default_rng(1)
    languages = ["en", "de", "fr", "ru", "uk", "bg", "ar", "fa", "hi", "xx", "mr"]  # xx: not in the table
    script_prompt = {"Latn": 0, "Cyrl": 1, "Arab": 2, "Deva": 3, "unknown": 4}
    prompts = np.asarray([script_prompt[language_table.script(lang, "unknown")] for lang in languages])
    labels = np.repeat(np.arange(len(languages) - 1), 20)  # no text for the last language, mr
    weights = rng.dirichlet(np.ones(16), size=len(labels)) * 0.1
    weights[np.arange(len(labels)), prompts[labels]] += 0.9
    query = rng.normal(size=(len(labels), 8))
    repeats = pool_analysis.Repeats(shuffles=100, resamples=50, mantel_permutations=999)
    rows = pool_analysis.analyse(weights, query, labels, languages, str(tmp_path), repeats=repeats)
    values = {(lang, metric): v for lang, metric, v in rows}
    assert ("mr", "top_prompt") not in values and values[("xx", "top_prompt")] == 4
    assert values[("all", "languages_with_metadata")] == 9  # xx is left out of script / family figures
    assert values[("all", "ami_prompt_script")] == pytest.approx(1.0)
    assert values[("all", "ami_prompt_script_p_value")] == pytest.approx(1 / 101)
    assert values[("all", "ami_prompt_script_ci_low")] <= 1.0 <= values[("all", "ami_prompt_script_ci_high")] + 1e-9
    language = values[("all", "ami_prompt_language")]
    assert values[("all", "ami_prompt_language_shuffled_p99")] < language < values[("all", "ami_prompt_script")]
    assert values[("all", "mantel_r_script")] > 0.9 and values[("all", "mantel_p_script")] < 0.01
    assert values[("all", "mantel_r_family")] < values[("all", "mantel_r_script")]
    assert values[("all", "effective_prompts")] == pytest.approx(clustering.effective_prompts(weights))
    assert values[("all", "pool_fraction_top")] == pytest.approx(5 / 16)


# ------------------------------------------------------------------------------------------------- MLM


def test_mlm_per_language_equals_direct_computation(encoder, tiny_params):
    rng = np.random.default_rng(1)
    batches = []
    for _ in range(2):
        rows = random_rows(rng, 6, 4, 20)
        ids = np.ones((6, 24), np.int32)
        targets = np.zeros_like(ids)
        weights = np.zeros(ids.shape, np.float32)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
            chosen = rng.choice(np.arange(1, len(row) - 1), size=max(1, (len(row) - 2) // 4), replace=False)
            targets[i, chosen] = ids[i, chosen]
            ids[i, chosen] = 8001
            weights[i, chosen] = 1.0
        mask = (ids != 1).astype(np.int32)
        batches.append(
            dict(input_ids=ids, attention_mask=mask, targets=targets, weights=weights, language=np.arange(6) % 2)
        )
    rows = mlm.mlm_eval(encoder, batches, ["en", "de"])
    got = {(lang, metric): v for lang, metric, v in rows}
    # Direct: full logits at every position, log-softmax in NumPy, per-language averages.
    forward = jax.jit(lambda v, ids, mask: XLMP(small_config(True)).apply(v, ids, mask)["logits"])
    nll = {0: [], 1: []}
    hit = {0: [], 1: []}
    for b in batches:
        logits = np.asarray(forward({"params": tiny_params[True]}, b["input_ids"], b["attention_mask"]), np.float64)
        log_probs = logits - logits.max(-1, keepdims=True)
        log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
        for i, j in zip(*np.nonzero(b["weights"]), strict=True):
            nll[int(b["language"][i])].append(-log_probs[i, j, b["targets"][i, j]])
            hit[int(b["language"][i])].append(float(logits[i, j].argmax() == b["targets"][i, j]))
    for index, lang in enumerate(["en", "de"]):
        assert got[(lang, "loss")] == pytest.approx(np.mean(nll[index]), rel=1e-5)
        assert got[(lang, "accuracy")] == pytest.approx(np.mean(hit[index]))
        assert got[(lang, "predictions")] == len(nll[index])
    assert got[("all", "loss")] == pytest.approx(np.mean(nll[0] + nll[1]), rel=1e-5)


def masked_batch(rng: np.random.Generator, rows: int = 6, length: int = 24) -> dict[str, np.ndarray]:
    """An MLM batch in the data pipeline's batch format (data_pipelines/README.md): a quarter of each row's inner tokens replaced by <mask> (8001)."""
    ids = np.ones((rows, length), np.int32)
    targets = np.zeros_like(ids)
    weights = np.zeros(ids.shape, np.float32)
    for i, row in enumerate(random_rows(rng, rows, 4, 20)):
        ids[i, : len(row)] = row
        chosen = rng.choice(np.arange(1, len(row) - 1), size=max(1, (len(row) - 2) // 4), replace=False)
        targets[i, chosen] = ids[i, chosen]
        ids[i, chosen] = 8001
        weights[i, chosen] = 1.0
    mask = (ids != 1).astype(np.int32)
    return dict(input_ids=ids, attention_mask=mask, targets=targets, weights=weights, language=np.arange(rows) % 2)


def test_mlm_eval_reports_how_far_routing_moves_between_masked_and_clean(encoder, tiny_params):
    rng = np.random.default_rng(2)
    batches = [masked_batch(rng), masked_batch(rng)]
    rows = mlm.mlm_eval(encoder, batches, ["en", "de"])
    got = {(lang, metric): v for lang, metric, v in rows}
    route = jax.jit(lambda v, ids, mask: XLMP(small_config(True)).apply(v, ids, mask, method="route")["weights"])
    variables = {"params": tiny_params[True]}
    tv, changed = {0: [], 1: []}, {0: [], 1: []}
    for b in batches:
        masked = np.asarray(route(variables, b["input_ids"], b["attention_mask"]), np.float64)
        clean_ids = np.where(b["weights"] > 0, b["targets"], b["input_ids"])
        clean = np.asarray(route(variables, clean_ids, b["attention_mask"]), np.float64)
        for i, lang in enumerate(b["language"]):
            tv[int(lang)].append(0.5 * np.abs(masked[i] - clean[i]).sum())
            changed[int(lang)].append(float(masked[i].argmax() != clean[i].argmax()))
    for index, lang in enumerate(["en", "de"]):
        assert got[(lang, "routing_tv")] == pytest.approx(np.mean(tv[index]), rel=1e-4)
        assert got[(lang, "routing_top_changed")] == pytest.approx(np.mean(changed[index]))
    assert got[("all", "routing_tv")] == pytest.approx(np.mean(tv[0] + tv[1]), rel=1e-4)
    assert got[("all", "routing_tv")] > 1e-3  # masking does move the routing of this random-init pool
    assert 0 < got[("all", "routing_jsd")] <= 1
    # the baseline has no pool, so no routing rows
    baseline = Encoder(small_config(False), tiny_params[False], batch_size=8, max_length=32)
    assert not [r for r in mlm.mlm_eval(baseline, batches, ["en", "de"]) if r[1].startswith("routing_")]


# --------------------------------------------------------------------------------------------- fine-tuning


@pytest.mark.slow
def test_finetuning_lowers_the_loss_on_a_tiny_tagging_task(tiny_params):
    encoder = Encoder(small_config(False), tiny_params[False], batch_size=8, max_length=16)
    rng = np.random.default_rng(2)
    rows = random_rows(rng, 24, 4, 12)
    labels = np.full((24, 16), -1, np.int32)
    for i, row in enumerate(rows):
        labels[i, 1 : len(row) - 1] = np.asarray(row[1:-1]) % 3  # the tag is a function of the token
    settings = finetune.FinetuneSettings(steps=40, batch_size=8, learning_rate=3e-3, max_length=16)
    tuner = finetune.FineTuner(encoder, "tagging", 3, settings)
    losses = tuner.fit(rows, labels)
    assert len(losses) == 40 and np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])
    pred = tuner.predict(rows)
    valid = labels >= 0
    assert (pred[valid] == labels[valid]).mean() > 0.6
    # The encoder's own params are untouched (the fine-tuner works on a copy).
    np.testing.assert_array_equal(
        np.asarray(encoder.params["embeddings"]["word_embeddings"]),
        tiny_params[False]["embeddings"]["word_embeddings"],
    )


class CharTokenizer:
    """A stand-in with XLM-R's special ids: one id per character (for exact feature checks)."""

    pad_id, bos_id, eos_id, unk_id = 1, 0, 2, 3

    def encode(self, text: str) -> list[int]:
        return [4 + ord(c) % 100 for c in text.replace(" ", "")]


def test_featurize_labels_first_subtokens_and_pairs():
    tok = CharTokenizer()
    examples = [transfer_data.Example(("ab", "c", "de"), tags=("CAP", "LOW", "NUM"))]
    rows, labels = finetune.featurize(examples, tok, "tagging", {"CAP": 0, "LOW": 1, "NUM": 2}, 8)
    assert rows == [[0, *tok.encode("ab"), *tok.encode("c"), *tok.encode("de"), 2]]
    assert labels.tolist() == [[-1, 0, -1, 1, 2, -1, -1, -1]]  # only first pieces carry a label
    rows, labels = finetune.featurize(examples, tok, "tagging", {"CAP": 0, "LOW": 1, "NUM": 2}, 5)
    assert rows == [[0, *tok.encode("ab"), *tok.encode("c"), 2]]  # a word that does not fit is dropped
    pair = [transfer_data.Example(("abc", "de"), label="yes")]
    rows, labels = finetune.featurize(pair, tok, "classification", {"no": 0, "yes": 1}, 7)
    assert rows == [[0, *tok.encode("a"), 2, 2, *tok.encode("de"), 2]] and labels.tolist() == [1]  # longer side cut


def test_finetune_readers_and_span_f1(tmp_path):
    (tmp_path / "train.conll").write_text("Paris\tB-LOC\nis\tO\n\nAnna\tB-PER\nSmith\tI-PER\n", encoding="utf-8")
    examples = transfer_data.read_conll(str(tmp_path / "train.conll"))
    assert examples[1] == transfer_data.Example(texts=("Anna", "Smith"), tags=("B-PER", "I-PER"))
    (tmp_path / "test-de.conll").write_text("Berlin B-LOC extra\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"test-de\.conll:1: .*3 field"):
        transfer_data.read_conll(str(tmp_path / "test-de.conll"))
    (tmp_path / "train.tsv").write_text("a b\tc d\t1\nonly one field\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"train\.tsv:2"):
        transfer_data.read_classification_tsv(str(tmp_path / "train.tsv"))
    gold = [["B-PER", "I-PER", "O", "B-LOC"]]
    assert finetune.span_f1(gold, gold) == 1.0
    assert finetune.span_f1(gold, [["B-PER", "O", "O", "B-LOC"]]) == pytest.approx(0.5)
    assert [transfer_data.word_shape(w) for w in ("Paris", "is", "42", "!")] == ["CAP", "LOW", "NUM", "PUNCT"]


# ------------------------------------------------------------------------------------------------ sweep


class FakeCheckpoints(evaluate.CheckpointSource):
    """Tiny random-init "checkpoints": {workdir: (pool?, [steps])}; counts loads."""

    def __init__(self, tiny_params, available: dict[str, tuple[bool, list[int]]]):
        self.params, self.available, self.loads = tiny_params, available, []

    def steps(self, workdir):
        return self.available[os.path.basename(workdir)][1]

    def load(self, workdir, step):
        self.loads.append((os.path.basename(workdir), step))
        pool = self.available[os.path.basename(workdir)][0]
        model = dataclasses.asdict(small_config(pool))
        return ml_collections.ConfigDict({"model": model, "data": {}}), self.params[pool], step


def sweep_config(tmp_path, workdirs, evals="count_a,count_b", steps="all"):
    config = evaluate_config()
    config.workdirs = ",".join(str(tmp_path / w) for w in workdirs)
    config.out = str(tmp_path / "out")
    config.evals = evals
    config.steps = steps
    config.progress = False
    config.tensorboard = False
    return config


def evaluate_config():
    sys.path.insert(0, str(REPO))
    from configs import eval_sweep

    return eval_sweep.get_config()


def test_sweep_skips_computed_cells_and_writes_the_table(tmp_path, tiny_params):
    for name in ("xlmp", "base"):
        (tmp_path / name).mkdir()
    calls = []

    def counting(name):
        def run(ctx, cfg):
            calls.append((os.path.basename(ctx.workdir), ctx.step, name))
            return [("de", "score", ctx.step / 100), ("all", "score", 1.0 if ctx.encoder.has_pool else 0.5)]

        return run

    evals = {"count_a": counting("count_a"), "count_b": counting("count_b")}
    source = FakeCheckpoints(tiny_params, {"xlmp": (True, [10, 20]), "base": (False, [20])})
    first = evaluate.run_sweep(sweep_config(tmp_path, ["xlmp"]), evals=evals, checkpoints=source)
    assert (first["computed"], first["skipped"]) == (4, 0)
    assert len(calls) == 4
    # Adding a checkpoint computes only its cells; the others are read back.
    second = evaluate.run_sweep(sweep_config(tmp_path, ["xlmp", "base"]), evals=evals, checkpoints=source)
    assert (second["computed"], second["skipped"]) == (2, 4)
    assert calls[4:] == [("base", 20, "count_a"), ("base", 20, "count_b")]
    assert source.loads == [("xlmp", 10), ("xlmp", 20), ("base", 20)]
    # Nothing new: nothing computed, nothing loaded.
    third = evaluate.run_sweep(sweep_config(tmp_path, ["base"]), evals=evals, checkpoints=source)
    assert (third["computed"], third["skipped"]) == (0, 2) and len(source.loads) == 3
    # A changed setting is a new cell (only for that eval).
    config = sweep_config(tmp_path, ["base"], evals="count_a")
    config.seed = 1
    assert evaluate.run_sweep(config, evals=evals, checkpoints=source)["computed"] == 1

    with open(second["csv"], newline="") as f:
        table = list(csv.DictReader(f))
    assert tuple(table[0]) == COLUMNS
    assert len(table) == 2 * 2 * 3 + 2  # 2 rows per cell, 6 cells + 1 re-run with another seed
    row = next(r for r in table if r["workdir"].endswith("xlmp") and r["step"] == "10" and r["language"] == "de")
    assert (row["model"], row["eval"], row["metric"], float(row["value"])) == ("xlmp", "count_a", "score", 0.1)
    assert {r["model"] for r in table} == {"xlmp", "baseline"}
    records = json.loads(pathlib.Path(second["json"]).read_text())
    assert set(records[0]) == set(COLUMNS) and len(records) == len(table)
    summary = pathlib.Path(second["summary"]).read_text()
    assert "## XLM-P vs baseline" in summary
    assert "| count_a | score | 1 | 0.5 | 0.5 |" in summary  # the `all` rows of the latest steps


def test_sweep_bad_input_names_the_value(tmp_path, tiny_params):
    (tmp_path / "empty").mkdir()
    (tmp_path / "xlmp").mkdir()
    source = FakeCheckpoints(tiny_params, {"empty": (True, []), "xlmp": (True, [10])})
    with pytest.raises(ValueError, match="unknown eval 'nope'"):
        evaluate.run_sweep(sweep_config(tmp_path, ["xlmp"], evals="mlm,nope"), checkpoints=source)
    with pytest.raises(FileNotFoundError, match="missing"):
        evaluate.run_sweep(sweep_config(tmp_path, ["missing"], evals="mlm"), checkpoints=source)
    with pytest.raises(FileNotFoundError, match="no checkpoint in work directory .*empty"):
        evaluate.run_sweep(sweep_config(tmp_path, ["empty"], evals="mlm"), checkpoints=source)
    with pytest.raises(ValueError, match=r"step 30 not in .*xlmp.* \(have: \[10\]\)"):
        evaluate.run_sweep(sweep_config(tmp_path, ["xlmp"], evals="mlm", steps="30"), checkpoints=source)
    config = sweep_config(tmp_path, ["xlmp"], evals="retrieval")
    config.retrieval.tsv = str(tmp_path / "en-de.tsv")
    (tmp_path / "en-de.tsv").write_text("one\teins\nbroken line\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"en-de\.tsv:2"):
        evaluate.run_sweep(config, checkpoints=source)


def test_registry_names_its_modules_and_gives_the_sweep_config_their_blocks():
    from xlmp_jax import evals

    config = evaluate_config()
    for name in evals.REGISTRY:
        module = evals.load(name)
        assert module.NAME == name and callable(module.run)
        assert config[name].to_dict() == module.config().to_dict()
    assert set(evaluate.split_list(config.evals)) < set(evals.REGISTRY)
    assert config.classification.tfds_train == "xtreme_xnli" and config.tagging.tfds_test == "wikiann"
    with pytest.raises(ValueError, match=r"unknown eval 'nope' \(known: \['bucc', 'classification', "):
        evals.load("nope")


@pytest.mark.slow
def test_registry_transfer_evals_run_in_the_sweep_with_their_own_settings(tmp_path, tiny_params):
    (tmp_path / "xlmp").mkdir()
    source = FakeCheckpoints(tiny_params, {"xlmp": (True, [10])})
    config = sweep_config(tmp_path, ["xlmp"], evals="classification,tagging")
    for block in (config.classification, config.tagging):
        block.update(dict(source="sample", languages="de,fr", max_train=16, max_test=5, steps=2, batch_size=4))
    config.tagging.max_test = 3
    assert evaluate.run_sweep(config, checkpoints=source)["computed"] == 2 * 3  # 3 fine-tuning seeds (default)
    table = {(r.eval, r.language, r.metric): r.value for r in ResultStore(config.out).rows}
    for name, tests in (("classification", 5), ("tagging", 3)):
        assert table[(name, "de", "examples")] == table[(name, "fr", "examples")] == tests  # its own max_test
        accuracies = [table[(name, lang, "accuracy")] for lang in ("de", "fr")]
        assert all(0.0 <= a <= 1.0 for a in accuracies)
        assert table[(name, "all", "accuracy")] == pytest.approx(np.mean(accuracies))
        assert np.isfinite([table[(name, "en", "train_loss_first")], table[(name, "en", "train_loss_last")]]).all()


def test_markdown_summary_without_baseline_has_no_comparison():
    from xlmp_jax.evals.results import Result

    text = markdown_summary([Result("/w/a", 1, "xlmp", "mlm", "en", "loss", 2.5)])
    assert "XLM-P vs baseline" not in text and "| loss | en | 2.5 |" in text


# ----------------------------------------------------------------------------------------- end to end


def _run(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, *args], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _wait(process: subprocess.Popen, timeout: float = 600) -> str:
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    assert process.returncode == 0, output[-3000:]
    return output


def make_corpus(root: pathlib.Path) -> dict[str, str]:
    """A small synthetic 3-language corpus (a word-for-word code: parallel by construction), its
    SentencePiece vocabulary, parallel TSVs and local classification / tagging sets."""
    import sentencepiece as spm

    rng = np.random.default_rng(0)
    stems = ["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta", "iota", "kappa", "lam", "Mu", "7"]
    vocab = {lang: [s if s.isdigit() else f"{lang}{s}" for s in stems] for lang in ("en", "de", "fr")}
    sentences = [rng.integers(0, len(stems), int(rng.integers(4, 10))) for _ in range(300)]
    for folder in ("text", "parallel", "classification", "tagging"):
        (root / folder).mkdir()
    text = {lang: [" ".join(words[i] for i in s) for s in sentences] for lang, words in vocab.items()}
    for lang, lines in text.items():
        (root / "text" / f"{lang}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for lang in ("de", "fr"):
        pairs = "".join(f"{en}\t{xx}\n" for en, xx in zip(text["en"][-30:], text[lang][-30:], strict=True))
        (root / "parallel" / f"en-{lang}.tsv").write_text(pairs, encoding="utf-8")
    for name, lines in (("train", text["en"][:40]), ("test-de", text["de"][-16:]), ("test-fr", text["fr"][-16:])):
        examples = transfer_data.derived_classification(lines)
        rows = "".join(f"{ex.texts[0]}\t{ex.texts[1]}\t{ex.label}\n" for ex in examples)
        (root / "classification" / f"{name}.tsv").write_text(rows, encoding="utf-8")
        tagged = transfer_data.derived_tagging(lines)
        conll = "\n".join("".join(f"{w}\t{t}\n" for w, t in zip(ex.texts, ex.tags, strict=True)) for ex in tagged)
        (root / "tagging" / f"{name}.conll").write_text(conll, encoding="utf-8")
    inputs = ",".join(str(root / "text" / f"{lang}.txt") for lang in vocab)
    spm.SentencePieceTrainer.train(
        input=inputs, model_prefix=str(root / "spm"), vocab_size=120, model_type="bpe", minloglevel=2
    )
    return {name: str(root / name) for name in ("text", "parallel", "classification", "tagging")} | {
        "vocab": str(root / "spm.model")
    }


@pytest.mark.slow
def test_end_to_end_train_then_sweep_cli(tmp_path):
    """The train CLI writes two tiny runs (XLM-P and baseline, 2 steps) on a local corpus; the sweep CLI
    evaluates both. (Tagging and cell skipping are covered above, without subprocesses, to save time.)"""
    data = make_corpus(tmp_path)
    env = {**os.environ, "XLMP_NUM_CPU_DEVICES": "1", "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
    env["XLA_FLAGS"] = env.get("XLA_FLAGS", "").replace("--xla_force_host_platform_device_count=8", "").strip()
    env["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path / "jax_cache")  # both CLIs; the user's cache stays untouched
    train_flags = [
        "--config.train.steps=2",
        "--config.train.warmup_steps=1",
        "--config.train.batch_size=4",
        "--config.train.checkpoint_every=1",
        "--config.train.eval_every=0",
        "--config.train.log_every=1",
        "--config.data.seq_length=32",
        "--config.data.shuffle_buffer=64",
        "--config.data.source=text",
        f"--config.data.path={data['text']}",
        "--config.data.languages=()",  # every language of the local corpus (tiny names 20 of the sample)
        f"--config.data.vocab_path={data['vocab']}",
        "--config.model.vocab_size=122",  # 120 pieces + <pad> + <mask>
    ]
    runs = {name: tmp_path / name for name in ("tiny", "tiny_baseline")}
    jobs = [
        _run(["-m", "xlmp_jax.train", f"--config=configs/{name}.py", f"--workdir={workdir}", *train_flags], env)
        for name, workdir in runs.items()
    ]
    try:
        logs = [_wait(job) for job in jobs]
    finally:
        for job in jobs:
            if job.poll() is None:
                job.kill()
    # The XLM-P run (configs/tiny.py: train.pool_report) ends by saying what its pool learned; the baseline does not.
    assert "what the pool learned (held-out lines of 3 languages)" in logs[0] and "pool learned" not in logs[1]
    report = {
        (r["language"], r["metric"]): r["value"]
        for r in json.loads((runs["tiny"] / "pool_report" / "results.json").read_text())
    }
    printed = re.search(
        r"AMI\(top prompt, language\) = (-?[\d.]+); shuffled languages: 99th percentile (-?[\d.]+)", logs[0]
    )
    assert printed, logs[0][-2000:]
    assert float(printed.group(1)) == pytest.approx(report[("all", "ami_prompt_language")], abs=5e-4)
    assert float(printed.group(2)) == pytest.approx(report[("all", "ami_prompt_language_shuffled_p99")], abs=5e-4)
    out = tmp_path / "evals"
    sweep_flags = [
        "-m",
        "xlmp_jax.evaluate",
        "--config=configs/eval_sweep.py",
        f"--config.workdirs={runs['tiny']},{runs['tiny_baseline']}",
        f"--config.out={out}",
        "--config.steps=latest",
        "--config.evals=mlm,retrieval,pool,classification",
        "--config.max_length=32",
        "--config.progress=False",
        "--config.mlm.max_batches=1",
        f"--config.retrieval.tsv_dir={data['parallel']}",
        f"--config.pool.text_dir={data['text']}",
        "--config.pool.max_sentences=10",
        "--config.pool.shuffles=100",
        "--config.pool.bootstrap_resamples=20",
        "--config.pool.mantel_permutations=9",
    ]
    sweep_flags += [
        f"--config.classification.local_dir={data['classification']}",
        "--config.classification.steps=3",
        "--config.classification.batch_size=8",
        "--config.classification.max_length=32",
    ]
    output = _wait(_run(sweep_flags, env))
    assert '"computed": 12' in output  # 2 x (mlm, retrieval, pool + classification's 3 default seeds)
    with open(out / "results.csv", newline="") as f:
        table = list(csv.DictReader(f))
    evals = ("mlm", "retrieval", "pool", "classification")
    assert {(r["model"], r["eval"]) for r in table} == {(m, e) for m in ("xlmp", "baseline") for e in evals}
    assert {int(r["step"]) for r in table} == {2}
    values = {(r["model"], r["eval"], r["language"], r["metric"]): float(r["value"]) for r in table}
    for model in ("xlmp", "baseline"):
        for lang in ("en", "de", "fr"):
            assert 0 < values[(model, "mlm", lang, "loss")] < 10
        for lang in ("de", "fr"):
            for metric in ("acc_en_to_xx", "acc_xx_to_en"):
                assert 0 <= values[(model, "retrieval", lang, metric)] <= 1
            assert values[(model, "retrieval", lang, "pairs")] == 30
            assert 0 <= values[(model, "classification", lang, "accuracy")] <= 1
    assert 0 <= values[("xlmp", "pool", "all", "nmi_argmax_prompt")] <= 1
    assert -1 <= values[("xlmp", "pool", "all", "ami_prompt_language")] <= 1
    assert 0 < values[("xlmp", "pool", "all", "ami_prompt_language_p_value")] <= 1
    assert 1 <= values[("xlmp", "pool", "all", "effective_prompts")] <= 16  # configs/tiny.py: 16 prompts
    used = values[("xlmp", "pool", "all", "prompts_used")]
    assert values[("xlmp", "pool", "all", "pool_fraction_top")] == pytest.approx(used / 16)
    assert ("baseline", "pool", "all", "nmi_argmax_prompt") not in values
    assert ("baseline", "pool", "all", "ami_prompt_language") not in values
    assert 0 <= values[("baseline", "pool", "all", "nmi_kmeans_query")] <= 1
    heatmaps = list((out / "plots").rglob("weights_heatmap.png"))
    assert len(heatmaps) == 1 and "tiny-" in str(heatmaps[0])
    _assert_png(str(heatmaps[0]))
    assert len(list((out / "plots").rglob("query_centroids.png"))) == 2
    assert len(list((out / "plots").rglob("routing_dendrogram.png"))) == 1
    summary = (out / "summary.md").read_text()
    assert "## XLM-P vs baseline" in summary and "weights_heatmap.png" in summary
    assert {p.name for p in (out / "tb").iterdir()} == {"tiny", "tiny_baseline"}
    assert list((out / "tb" / "tiny").glob("events.out.tfevents.*"))


def test_tfds_readers_on_mocked_datasets():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=4, policy=tfds.testing.MockPolicy.USE_CODE):
        tagged = transfer_data.tfds_examples("wikiann", "test", "de", "", "tagging", max_examples=3)
        pairs = transfer_data.tfds_examples("paws_x_wiki", "test", "fr", "", "classification", max_examples=3)
    assert len(tagged) == 3 and all(ex.texts and ex.tags for ex in tagged)  # mock lengths are independent
    assert {t for ex in tagged for t in ex.tags} <= {"O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"}
    assert len(pairs) == 3 and all(len(ex.texts) == 2 for ex in pairs)
    assert {ex.label for ex in pairs} <= {"different_meaning", "paraphrase"}


def test_default_sources_read_the_shipped_sample_layout(tmp_path, monkeypatch):
    """The defaults (shipped sample: mono/<lang>.txt, parallel/en-<lang>.tsv) on a stand-in sample folder."""
    from data_pipelines import sample

    (tmp_path / "mono").mkdir()
    (tmp_path / "parallel").mkdir()
    for lang in ("en", "de"):
        lines = [f"{lang} Line {i} ." for i in range(20)]
        (tmp_path / "mono" / f"{lang}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    pairs = "".join(f"Hello {i} world\tHallo {i} Welt\n" for i in range(40))
    (tmp_path / "parallel" / "en-de.tsv").write_text(pairs, encoding="utf-8")
    monkeypatch.setattr(sample, "SAMPLE_DIR", str(tmp_path))
    held = [i for i in range(40) if sample.is_eval_pair(f"Hello {i} world")]  # the held-out pairs
    kept = [i for i in range(40) if i not in held]
    assert len(held) >= 5 and len(kept) >= 6

    texts = heldout.validation_texts(heldout.text_languages(""), 0)
    assert texts == {"de": ["de Line 18 .", "de Line 19 ."], "en": ["en Line 18 .", "en Line 19 ."]}
    config = evaluate_config()
    config.retrieval.max_pairs = 4
    english, german = retrieval.retrieval_pairs(config.retrieval)["de"]
    assert english[3] == f"Hello {held[3]} world" and german[3] == f"Hallo {held[3]} Welt" and len(german) == 4
    train, tests = transfer.finetune_data("classification", config.classification, seed=0)
    assert [ex.label for ex in train] == ["same", "different"] * (len(kept) // 2) + ["same"] * (len(kept) % 2)
    assert set(tests) == {"de"} and len(tests["de"]) == len(held)
    assert train[0].texts == (f"Hello {kept[0]} world", f"world {kept[0]} Hello")
    train, tests = transfer.finetune_data("tagging", config.tagging, seed=0)
    assert tests["de"][1] == transfer_data.Example(("Hallo", str(held[1]), "Welt"), tags=("CAP", "NUM", "CAP"))
    config.retrieval.languages = "fr"
    with pytest.raises(ValueError, match="en-fr.tsv"):
        retrieval.retrieval_pairs(config.retrieval)


def test_transfer_dev_texts_are_a_dev_set_disjoint_from_the_reported_text():
    """The ablation's dev text: the transfer task's dev strings, English and translations, none of them a
    validation line, a held-out pair or a test string; a language without dev strings fails by name."""
    from data_pipelines import sample
    from xlmp_jax.evals import pool as pool_eval

    langs = heldout.transfer_dev_languages()
    assert "en" in langs and "de" in langs and "uk" not in langs
    texts = heldout.transfer_dev_texts(["en", "de"], 0)
    dev = sample.read_transfer("dev")
    reported = sample.reported_sentences()
    assert texts["en"] == [it.english for it in dev if sample.normalize(it.english) not in reported]
    assert 150 < len(texts["en"]) < len(dev)  # some English dev strings are also held-out pairs: dropped
    de = [it.translations["de"] for it in dev if "de" in it.translations]
    assert texts["de"] == [t for t in de if sample.normalize(t) not in reported] and len(texts["de"]) > 150
    assert len(heldout.transfer_dev_texts(["de"], 7)["de"]) == 7
    validation = {sample.normalize(t) for lang in sample.languages() for t in sample.read_mono(lang, "validation")}
    pairs = {
        sample.normalize(t)
        for lang in sample.parallel_languages()
        for p in sample.read_parallel(lang, "validation")
        for t in p
    }
    test = {sample.normalize(t) for it in sample.read_transfer("test") for t in (it.english, *it.translations.values())}
    dev_texts = {sample.normalize(t) for ts in heldout.transfer_dev_texts(langs, 0).values() for t in ts}
    assert len(dev_texts) > 1000 and not dev_texts & (validation | pairs | test)
    assert dev_texts <= sample.eval_sentences()  # no training split holds them
    with pytest.raises(ValueError, match="'uk'"):
        heldout.transfer_dev_texts(["de", "uk"], 0)

    block = pool_eval.config()
    block.update(dict(text="transfer_dev", languages="en,ru", max_sentences=5))
    assert {k: len(v) for k, v in pool_eval.pool_texts(block).items()} == {"en": 5, "ru": 5}
    block.text = "dev"
    with pytest.raises(ValueError, match="pool.text='dev'"):
        pool_eval.pool_texts(block)


def test_transfer_dev_pairs_are_aligned_translations_disjoint_from_the_reported_text():
    """Retrieval's dev pairs: an English dev string and its translation, row by row; no side is a sentence a
    report reads; the retrieval block selects them and refuses an unknown ``pairs`` by name."""
    from data_pipelines import sample

    dev = sample.read_transfer("dev")
    reported = sample.reported_sentences()
    english, german = heldout.transfer_dev_pairs(["de", "ja"], 0)["de"]
    expected = [(it.english, it.translations["de"]) for it in dev if "de" in it.translations]
    expected = [p for p in expected if not {sample.normalize(t) for t in p} & reported]
    assert list(zip(english, german, strict=True)) == expected and len(expected) > 150
    assert len(expected) < len([it for it in dev if "de" in it.translations])  # some pairs dropped
    assert len(heldout.transfer_dev_pairs(["de"], 9)["de"][1]) == 9
    with pytest.raises(ValueError, match="'uk'"):
        heldout.transfer_dev_pairs(["de", "uk"], 0)

    block = ml_collections.ConfigDict(dict(retrieval.config(), pairs="transfer_dev", languages="de,ja", max_pairs=20))
    pairs = retrieval.retrieval_pairs(block)
    assert sorted(pairs) == ["de", "ja"] and pairs["de"] == (english[:20], german[:20])
    with pytest.raises(ValueError, match="retrieval.pairs='dev'"):
        retrieval.check(ml_collections.ConfigDict(dict(retrieval.config(), pairs="dev")), "retrieval")
    with pytest.raises(ValueError, match="tsv"):
        retrieval.check(ml_collections.ConfigDict(dict(retrieval.config(), pairs="transfer_dev", tsv="x")), "retrieval")


def test_mlm_and_pool_text_settings_are_refused_before_any_checkpoint_is_read():
    from xlmp_jax.evals import pool as pool_eval

    with pytest.raises(ValueError, match="mlm.source='dev'"):
        mlm.check(ml_collections.ConfigDict(dict(mlm.config(), source="dev")), "mlm")
    with pytest.raises(ValueError, match="pool.text='dev'"):
        pool_eval.check(ml_collections.ConfigDict(dict(pool_eval.config(), text="dev")), "pool")
    mlm.check(ml_collections.ConfigDict(dict(mlm.config(), source="transfer_dev")), "mlm")
    pool_eval.check(pool_eval.config(), "pool")
