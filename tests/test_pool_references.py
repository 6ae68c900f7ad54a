"""The pool eval's references (``evals.pool_references``) and the within-script tests, on cases whose answer is known."""

import jax
import numpy as np
import pytest
from helpers import init_state, mesh_of, model_of, tiny_config

from xlmp_jax.evals import clustering, pool_analysis, pool_references
from xlmp_jax.training import sharding
from xlmp_jax.training.state import initial_params

LANGUAGES = ["en", "de", "ru", "uk", "bg", "ar", "fa", "ug"]  # Latn 2, Cyrl 3, Arab 3
PER_LANGUAGE = 12


def _ami_rows(name, labels, assignment, seed, where):
    return pool_analysis.ami_rows(name, labels, assignment, pool_analysis.Repeats(20, 10, 9), seed, where)


def _labels() -> np.ndarray:
    return np.repeat(np.arange(len(LANGUAGES)), PER_LANGUAGE)


def _values(rows) -> dict:
    return {(where, metric): value for where, metric, value in rows}


def test_script_reference_is_ami_of_script_against_language():
    labels = _labels()
    sentences = pool_references.Sentences(labels, LANGUAGES, np.eye(len(LANGUAGES))[labels])
    values = _values(pool_references.reference_rows(sentences, _ami_rows, seed=0))
    scripts = np.asarray(["Latn", "Latn", "Cyrl", "Cyrl", "Cyrl", "Arab", "Arab", "Arab"])[labels]
    assert values[("all", "ami_script_language")] == pytest.approx(clustering.ami(labels, scripts))
    # The query is one-hot per language: its k-means at k = languages is the language itself.
    assert values[("all", "ami_kmeans_query_klang_language")] == pytest.approx(1.0)
    assert values[("all", "ami_kmeans_query_klang_script")] == pytest.approx(clustering.ami(scripts, labels))
    assert ("all", "ami_random_keys_language") not in values  # no pool size: no random pool, no k = pool


def test_script_labels_leave_out_languages_without_metadata():
    labels = np.asarray([0, 0, 1, 1, 2, 2])
    ids, known = pool_references.script_labels(labels, ["en", "xx", "ru"])
    assert known.tolist() == [True, True, False, False, True, True]
    assert clustering.ami(ids, [0, 0, 1, 1]) == pytest.approx(1.0)


def test_tfidf_kmeans_recovers_separable_bags_of_ids():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 15)
    # Each language draws its ids from its own 20-id range, plus a few ids every language shares.
    token_ids = [list(rng.integers(100 * g, 100 * g + 20, 8)) + [7, 8] for g in labels]
    features = pool_references.tfidf_features(token_ids, dimensions=10, seed=0)
    assert features.shape == (60, 10)
    clusters = pool_references.clustered(
        pool_references.Sentences(labels, ["a", "b", "c", "d"], rng.normal(size=(60, 4)), token_ids),
        {"klang": 4},
        seed=0,
    )
    assert clustering.ami(labels, clusters["tfidf_klang"]) == pytest.approx(1.0)


def test_random_key_pool_is_a_fixed_draw_of_the_seed():
    query = np.random.default_rng(1).normal(size=(50, 16))
    first = pool_references.random_key_prompts(query, 8, key_std=0.02, score="cosine", seed=3)
    assert first.tolist() == pool_references.random_key_prompts(query, 8, key_std=0.02, score="cosine", seed=3).tolist()
    assert first.min() >= 0 and first.max() < 8 and len(np.unique(first)) > 1
    # The keys' scale moves no argmax; another seed is another pool.
    assert (first == pool_references.random_key_prompts(query, 8, key_std=1.0, score="cosine", seed=3)).all()
    assert (first != pool_references.random_key_prompts(query, 8, key_std=0.02, score="cosine", seed=4)).any()
    # Per sentence: on a subset the pool routes each query as it did on the whole set.
    part = pool_references.random_key_prompts(query[10:20], 8, key_std=0.02, score="cosine", seed=3)
    assert part.tolist() == first[10:20].tolist()


def test_within_script_rows_use_only_the_groups_sentences():
    labels = _labels()
    # Prompts: each Cyrillic language its own prompt; every other sentence a random prompt.
    rng = np.random.default_rng(2)
    prompts = rng.integers(0, 16, len(labels))
    cyrillic = np.isin(labels, [2, 3, 4])
    prompts[cyrillic] = labels[cyrillic]
    sentences = pool_references.Sentences(labels, LANGUAGES, rng.normal(size=(len(labels), 6)), pool_size=16)
    values = _values(pool_references.within_script_rows(sentences, prompts, _ami_rows, seed=0))
    assert {where for where, _ in values} == {"script:Cyrl", "script:Arab"}  # Latin holds 2 languages only
    assert values[("script:Cyrl", "languages")] == 3 and values[("script:Cyrl", "sentences")] == 3 * PER_LANGUAGE
    assert values[("script:Cyrl", "ami_prompt_language")] == pytest.approx(1.0)
    arab = np.isin(labels, [5, 6, 7])
    assert values[("script:Arab", "ami_prompt_language")] == pytest.approx(clustering.ami(labels[arab], prompts[arab]))
    random_keys = pool_references.random_key_prompts(sentences.query, 16, key_std=0.02, score="cosine", seed=0)
    assert values[("script:Arab", "ami_random_keys_language")] == pytest.approx(
        clustering.ami(labels[arab], random_keys[arab])
    )
    assert ("script:Cyrl", "ami_kmeans_query_klang_language_shuffled_p99") in values


def _family_routing(family_weight: float, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """16 languages in two scripts, each script holding two families of four (family nested in script);
    routing distance = different script + ``family_weight`` x different family + noise."""
    scripts = ["S1"] * 8 + ["S2"] * 8
    families = ["A"] * 4 + ["B"] * 4 + ["C"] * 4 + ["D"] * 4
    script_diff = clustering.different_category_matrix(scripts)
    family_diff = clustering.different_category_matrix(families)
    noise = np.random.default_rng(seed).uniform(0, 0.3, (16, 16))
    distances = script_diff + family_weight * family_diff + (noise + noise.T) / 2
    np.fill_diagonal(distances, 0)
    return distances, family_diff, scripts


def test_within_script_permutation_separates_family_from_script():
    distances, family, scripts = _family_routing(family_weight=0.5, seed=0)
    driven = clustering.mantel_test(distances, family, permutations=499, seed=0, strata=scripts)
    assert driven.p_value < 0.01
    # Routing by script alone: the all-language null calls family significant, the within-script null does not.
    distances, family, scripts = _family_routing(family_weight=0.0, seed=1)
    assert clustering.mantel_test(distances, family, permutations=499, seed=0).p_value < 0.01
    within = [
        clustering.mantel_test(distances, family, permutations=199, seed=s, strata=scripts).p_value for s in range(5)
    ]
    assert min(within) > 0.05
    # Every language its own script: nothing may move, so nothing is significant.
    alone = clustering.mantel_test(distances, family, permutations=49, seed=0, strata=[str(i) for i in range(16)])
    assert alone.p_value == 1.0


def test_within_strata_permutation_keeps_each_index_in_its_stratum():
    strata = ["a", "b", "a", "c", "b", "a"]
    order = clustering.within_strata_permutation(strata, np.random.default_rng(0))
    assert sorted(order.tolist()) == list(range(6))
    assert [strata[i] for i in order] == strata
    assert order[3] == 3


@pytest.mark.slow
def test_initial_params_are_the_trainers_step_zero():
    config = tiny_config()
    config.train.seed = 5
    mesh = sharding.make_mesh(mesh_of(data=2, fsdp=2, tensor=2))
    state, _ = init_state(config, mesh, jax.random.key(5))
    rebuilt = initial_params(model_of(config), 5)
    for got, want in zip(jax.tree.leaves(rebuilt), jax.tree.leaves(state.params), strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    other = initial_params(model_of(config), 6)
    assert not np.array_equal(np.asarray(other["pool"]["keys"]), np.asarray(rebuilt["pool"]["keys"]))


@pytest.mark.slow
def test_pool_eval_step0_reference_of_an_untrained_checkpoint_is_the_pool_itself(tmp_path, sample_vocab):
    """A checkpoint still at its random start: the step-0 pool rebuilt from its config and seed routes every
    sentence as the checkpoint does, so the two AMIs agree; the baseline gets the pool-size references at the
    sweep's ``reference_pool_size`` and no step-0 rows."""
    import ml_collections

    from xlmp_jax.evals import pool
    from xlmp_jax.evals.context import EvalContext
    from xlmp_jax.hf.encoder import Encoder
    from xlmp_jax.model.model_config import ModelConfig
    from xlmp_jax.model.prompt_pool import PoolConfig

    settings = pool.config()
    settings.update(languages="en,de,ru,uk,bg", max_sentences=12, shuffles=20, bootstrap_resamples=10)
    settings.update(mantel_permutations=9, reference_pool_size=4)
    sweep = ml_collections.ConfigDict(dict(seed=0))
    values = {}
    for arm, pool_config in (("xlmp", PoolConfig(size=4, length=2)), ("baseline", False)):
        model = ModelConfig.preset("tiny", pool=pool_config, hidden_dropout=0.0, attention_dropout=0.0)
        encoder = Encoder(model, initial_params(model, 3), batch_size=16, max_length=32)
        run_config = ml_collections.ConfigDict(dict(train=dict(seed=3), init_from_hf=""))
        ctx = EvalContext(str(tmp_path / arm), 0, run_config, encoder, sweep, str(tmp_path / arm))
        ctx.__dict__["tokenizer"] = sample_vocab  # the cached property, without a run's vocabulary path
        values[arm] = _values(pool.run(ctx, settings))
    xlmp, baseline = values["xlmp"], values["baseline"]
    assert xlmp[("all", "ami_step0_prompt_language")] == pytest.approx(xlmp[("all", "ami_prompt_language")])
    assert ("all", "ami_tfidf_klang_language") in xlmp and ("script:Cyrl", "ami_prompt_language") in xlmp
    assert ("all", "mantel_p_family_within_script") not in xlmp  # en, de, ru, uk, bg: all Indo-European
    assert ("all", "ami_random_keys_language") in baseline and ("all", "ami_kmeans_query_kpool_language") in baseline
    assert not any("step0" in metric or "prompt_" in metric for _, metric in baseline)
    # The TF-IDF references read the text alone: the same in both arms.
    assert xlmp[("all", "ami_tfidf_klang_language")] == baseline[("all", "ami_tfidf_klang_language")]


def test_console_report_names_the_references_it_has():
    from xlmp_jax.evals import pool

    rows = {("all", "ami_prompt_language"): 0.7, ("all", "ami_script_language"): 0.83, ("en", "top_prompt"): 3.0}
    rows[("all", "ami_tfidf_klang_language")] = 0.9
    text = pool.report(rows, ["en"], "plots/")
    assert "no learned pool: script alone 0.830; TF-IDF k-means 0.900\n" in text and "en 3" in text
