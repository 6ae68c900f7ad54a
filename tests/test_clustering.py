"""Chance-corrected clustering statistics (xlmp_jax.evals.clustering) on labelings whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score

from xlmp_jax.evals import clustering


def planted_assignment(rng: np.random.Generator, labels: np.ndarray, prompts: int, signal: float) -> np.ndarray:
    """Argmax prompt of noisy logits where each label's own prompt gets ``signal`` extra logit."""
    own = rng.permutation(prompts)[: labels.max() + 1]
    logits = rng.normal(size=(len(labels), prompts))
    logits[np.arange(len(labels)), own[labels]] += signal
    return logits.argmax(axis=1)


# ------------------------------------------------------------------------------------------------- AMI


def test_ami_on_known_labelings():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 200)
    assert clustering.ami(labels, labels) == pytest.approx(1.0)
    relabel = rng.permutation(10)
    assert clustering.ami(labels, relabel[labels]) == pytest.approx(1.0)  # names of clusters do not matter
    assignment = planted_assignment(rng, labels, 16, 1.5)
    assert clustering.ami(labels, assignment) == pytest.approx(adjusted_mutual_info_score(labels, assignment))
    # Independent labelings: E[AMI] = 0 by construction. The plug-in MI of independent labels is ~
    # chi2((K-1)(C-1)) / 2n nats: with K = C = 10 and n = 2000 its sd is sqrt(2 * 81) / 4000 = 0.0032 nats,
    # ~0.0014 after dividing by the mean entropy ln 10, so 0.01 is ~7 sd from 0.
    independent = [clustering.ami(labels, rng.integers(0, 10, len(labels))) for _ in range(10)]
    assert max(abs(v) for v in independent) < 0.01
    assert abs(np.mean(independent)) < 0.003


def test_nmi_is_flattering_where_ami_is_not():
    """At the sample's sizes (114 languages x 32 lines, 256 prompts) a random assignment has NMI ~0.4."""
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(114), 32)
    random_prompts = rng.integers(0, 256, len(labels))
    assert normalized_mutual_info_score(labels, random_prompts) > 0.35
    assert abs(clustering.ami(labels, random_prompts)) < 0.01


# ---------------------------------------------------------------------------------------- permutation


def test_permutation_test_of_a_perfect_labelling():
    labels = np.repeat(np.arange(5), 20)
    test = clustering.permutation_test(labels, labels, shuffles=100, seed=0)
    assert test.observed == pytest.approx(1.0)
    assert test.p_value == pytest.approx(1 / 101)  # no shuffle reaches it
    assert test.observed > test.shuffled_p99
    assert abs(test.shuffled_mean) < 0.02 and test.shuffles == 100


@pytest.mark.slow
def test_permutation_test_of_random_labellings_is_calibrated():
    """Independent labels: the observed AMI is one more draw from the null, so p ~ Uniform(0, 1)."""
    rng = np.random.default_rng(2)
    labels = np.repeat(np.arange(5), 30)
    tests = [clustering.permutation_test(labels, rng.integers(0, 8, 150), shuffles=100, seed=rng) for _ in range(40)]
    p_values = np.array([t.p_value for t in tests])
    assert 0.35 < p_values.mean() < 0.65  # a Uniform(0, 1) mean of 40 draws: sd 0.046
    assert np.mean(p_values <= 0.05) <= 0.15  # expected 0.05; binomial(40, 0.05) > 6 has p ~ 0.01
    assert np.mean([t.observed > t.shuffled_p99 for t in tests]) <= 0.15


def test_permutation_test_detects_a_weak_real_signal_and_is_seeded():
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(10), 50)
    assignment = planted_assignment(rng, labels, 16, 1.0)
    first = clustering.permutation_test(labels, assignment, shuffles=200, seed=7)
    assert first.observed < 0.2  # weak, yet beyond every shuffle
    assert first.p_value == pytest.approx(1 / 201) and first.observed > first.shuffled_p99
    assert clustering.permutation_test(labels, assignment, shuffles=200, seed=7) == first
    with pytest.raises(ValueError, match="shape"):
        clustering.permutation_test(labels, assignment[:-1])


# ------------------------------------------------------------------------------------------ bootstrap


def test_bootstrap_interval_contains_the_estimate_and_narrows_with_more_data():
    rng = np.random.default_rng(4)
    widths = []
    for per_label in (25, 400):
        labels = np.repeat(np.arange(8), per_label)
        assignment = planted_assignment(rng, labels, 16, 1.5)
        observed = clustering.ami(labels, assignment)
        interval = clustering.bootstrap_interval(labels, assignment, resamples=100, seed=0)
        assert interval.low < observed < interval.high
        widths.append(interval.high - interval.low)
    # 16x the inputs: the standard error shrinks ~4x; allow 2.5x-6x.
    assert 2.5 < widths[0] / widths[1] < 6


def bootstrap_against_fresh_draws(seed: int, languages: int, per_language: int, prompts: int, signal: float):
    """(observed AMI, plain interval, recentred interval, AMI of 30 fresh draws of the same process)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(languages), per_language)
    own = rng.permutation(prompts)[:languages]

    def draw() -> np.ndarray:
        logits = rng.normal(size=(len(labels), prompts))
        logits[np.arange(len(labels)), own[labels]] += signal
        return logits.argmax(axis=1)

    assignment = draw()
    plain = clustering.bootstrap_interval(labels, assignment, resamples=100, recentre=False, seed=0)
    recentred = clustering.bootstrap_interval(labels, assignment, resamples=100, seed=0)
    fresh = np.array([clustering.ami(labels, draw()) for _ in range(30)])
    return clustering.ami(labels, assignment), plain, recentred, fresh


def test_bootstrap_recentring_removes_the_duplicate_bias_of_ami():
    """Many prompts, few inputs per language: a with-replacement resample repeats inputs, which MI reads
    as agreement, so the plain percentile interval misses the observed AMI. Recentred, it holds it, but is
    narrower than the spread over fresh draws of the same process (~0.6x here, as documented)."""
    observed, plain, recentred, fresh = bootstrap_against_fresh_draws(5, 20, 30, 256, 3.0)
    assert plain.shift > 0.05 and plain.low > observed  # biased upward past the estimate
    assert recentred.shift == pytest.approx(plain.shift)
    assert recentred.low < observed < recentred.high
    assert 0.4 < (recentred.high - recentred.low) / (2 * 1.96 * fresh.std()) < 0.8


def test_bootstrap_interval_matches_fresh_draws_at_many_inputs_per_language():
    observed, plain, recentred, fresh = bootstrap_against_fresh_draws(6, 10, 200, 32, 2.5)
    assert recentred.low < observed < recentred.high
    # (Whether it covers the fresh draws' mean is a 95 % event per draw, so not asserted on one draw.)
    # Width / the fresh draws' 95 % width: ~1.0-1.15 measured; 30 draws estimate an sd to ~13 %.
    assert 0.75 < (recentred.high - recentred.low) / (2 * 1.96 * fresh.std()) < 1.4


# ------------------------------------------------------------------------------------------- soft view


def test_js_divergence_matrix_properties_and_scipy_agreement():
    rng = np.random.default_rng(6)
    distributions = rng.dirichlet(np.ones(12) * 0.3, size=7)
    distributions[5] = np.eye(12)[0]
    distributions[6] = np.eye(12)[1]  # disjoint support with row 5: the maximum, ln 2
    js = clustering.js_divergence_matrix(distributions)
    np.testing.assert_allclose(js, js.T)
    np.testing.assert_array_equal(np.diag(js), 0.0)
    assert js.max() <= np.log(2) + 1e-12 and js.min() >= 0
    assert js[5, 6] == pytest.approx(np.log(2))
    expected = np.array([[jensenshannon(p, q) ** 2 for q in distributions] for p in distributions])
    np.testing.assert_allclose(js, expected, atol=1e-12)
    distance = clustering.js_distance_matrix(distributions)
    np.testing.assert_allclose(distance, np.sqrt(expected / np.log(2)), atol=1e-7)
    assert distance[5, 6] == pytest.approx(1.0)


def test_routing_summaries_on_uniform_and_one_hot_routing():
    m = 16
    uniform = np.full((40, m), 1 / m)
    assert clustering.effective_prompts(uniform) == pytest.approx(m)
    assert clustering.mean_input_entropy(uniform) == pytest.approx(np.log(m))
    assert clustering.fraction_of_pool_top(uniform) == pytest.approx(1 / m)  # ties: argmax is prompt 0
    one_prompt = np.tile(np.eye(m)[3], (40, 1))
    assert clustering.effective_prompts(one_prompt) == pytest.approx(1.0)
    assert clustering.mean_input_entropy(one_prompt) == pytest.approx(0.0)
    assert clustering.fraction_of_pool_top(one_prompt) == pytest.approx(1 / m)
    # Hard routing spread evenly over 4 prompts: 4 effective prompts, no per-input uncertainty.
    four = np.eye(m)[np.arange(40) % 4]
    assert clustering.effective_prompts(four) == pytest.approx(4.0)
    assert clustering.mean_input_entropy(four) == pytest.approx(0.0)
    assert clustering.fraction_of_pool_top(four) == pytest.approx(4 / m)
    labels = np.arange(40) % 4
    np.testing.assert_allclose(clustering.mean_routing_by_label(four, labels, 4), np.eye(m)[:4])
    with pytest.raises(ValueError, match="label 4 has no input"):
        clustering.mean_routing_by_label(four, labels, 5)


# --------------------------------------------------------------------------------------------- Mantel


def test_mantel_detects_planted_structure_and_not_a_shuffled_one():
    rng = np.random.default_rng(8)
    groups = np.repeat(np.arange(3), 10)
    reference = clustering.different_category_matrix([f"script{g}" for g in groups])
    assert reference[0, 1] == 0 and reference[0, 29] == 1 and np.all(np.diag(reference) == 0)
    noise = rng.uniform(0, 0.5, (30, 30))
    planted = reference + (noise + noise.T) / 2
    np.fill_diagonal(planted, 0)
    found = clustering.mantel_test(planted, reference, permutations=999, seed=0)
    assert found.r > 0.7 and found.p_value < 0.01
    assert found.p_value == pytest.approx(1 / 1000)
    # The same distances, languages relabelled at random: no association with the reference.
    p_values = []
    for _ in range(20):
        order = rng.permutation(30)
        p_values.append(clustering.mantel_test(planted[np.ix_(order, order)], reference, permutations=199, seed=rng))
    p = np.array([t.p_value for t in p_values])
    assert np.mean(p < 0.01) <= 0.1 and 0.25 < p.mean() < 0.75
    # One category only: nothing to correlate.
    constant = clustering.mantel_test(planted, np.zeros((30, 30)), permutations=9)
    assert np.isnan(constant.r) and np.isnan(constant.p_value)
    with pytest.raises(ValueError, match="square"):
        clustering.mantel_test(planted, reference[:5, :5])
