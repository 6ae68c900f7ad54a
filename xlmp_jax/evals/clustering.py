"""Chance-corrected statistics for "does the prompt pool cluster inputs by language?" (numpy/sklearn only).

Plain NMI of the argmax prompt against the language is far from 0 for a *random* assignment when there
are many prompts and few inputs per language (about 0.4 at 114 languages x 32 lines, 256 prompts), so a
raw score cannot say whether routing is real. Everything here is either corrected for chance (AMI) or
comes with its null distribution (permutation tests) and its sampling spread (bootstrap):

- hard view: AMI of the top prompt against a grouping (language, script), a label-shuffle permutation
  test and a bootstrap interval;
- soft view: per-language mean routing distributions, their Jensen-Shannon divergences, the effective
  number of prompts in use, the mean per-input routing entropy and the fraction of the pool that is some
  input's top prompt;
- a Mantel test: does the routing distance between languages follow a linguistic distance? With
  ``strata`` (the languages' scripts) its null permutes languages only within a stratum, so what the strata
  alone explain (family is nested in script) stays in the null: a partial Mantel test is unreliable there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_mutual_info_score

Statistic = Callable[[np.ndarray, np.ndarray], float]
_TIE = 1e-12  # a shuffle equal to the observed value up to round-off counts against it (conservative)


def ami(labels: Sequence[int] | np.ndarray, assignment: Sequence[int] | np.ndarray) -> float:
    """Adjusted mutual information (sklearn, arithmetic normalisation): 1 for identical partitions up
    to relabelling, 0 in expectation for independent ones, whatever the numbers of classes."""
    return float(adjusted_mutual_info_score(np.asarray(labels), np.asarray(assignment)))


def kmeans_clusters(vectors: np.ndarray, num_clusters: int, seed: int = 0) -> np.ndarray:
    """k-means cluster of each row of ``vectors`` (L2-normalised: the pool scores by cosine)."""
    if num_clusters < 2 or len(vectors) <= num_clusters:
        raise ValueError(f"k-means needs >= 2 clusters and more points than clusters, got {num_clusters}")
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return KMeans(n_clusters=num_clusters, n_init=10, random_state=seed).fit_predict(unit)


def _generator(seed: int | np.random.Generator) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


@dataclasses.dataclass(frozen=True)
class PermutationTest:
    """A statistic against its distribution under shuffled labels (the "no association" null)."""

    observed: float
    shuffled_mean: float
    shuffled_p99: float  # 99th percentile of the shuffled values
    p_value: float  # (1 + #shuffled >= observed) / (1 + shuffles): never 0, one-sided
    shuffles: int


def permutation_test(
    labels: Sequence[int] | np.ndarray,
    assignment: Sequence[int] | np.ndarray,
    statistic: Statistic = ami,
    *,
    shuffles: int = 200,
    seed: int | np.random.Generator = 0,
) -> PermutationTest:
    """Shuffles ``labels`` against a fixed ``assignment`` ``shuffles`` times. Shuffling keeps both
    marginals (how many inputs each language and each prompt has), so only the pairing is tested."""
    if shuffles < 1:
        raise ValueError(f"shuffles={shuffles} must be >= 1")
    labels, assignment = np.asarray(labels), np.asarray(assignment)
    if labels.shape != assignment.shape:
        raise ValueError(f"labels {labels.shape} and assignment {assignment.shape} differ in shape")
    rng = _generator(seed)
    observed = statistic(labels, assignment)
    null = np.array([statistic(rng.permutation(labels), assignment) for _ in range(shuffles)])
    return PermutationTest(
        observed=float(observed),
        shuffled_mean=float(null.mean()),
        shuffled_p99=float(np.percentile(null, 99)),
        p_value=float((1 + np.count_nonzero(null >= observed - _TIE)) / (1 + shuffles)),
        shuffles=shuffles,
    )


@dataclasses.dataclass(frozen=True)
class Interval:
    low: float
    high: float
    level: float
    resamples: int
    shift: float  # mean of the resampled values minus the observed one (removed when recentred)


def bootstrap_interval(
    labels: Sequence[int] | np.ndarray,
    assignment: Sequence[int] | np.ndarray,
    statistic: Statistic = ami,
    *,
    resamples: int = 200,
    level: float = 0.95,
    recentre: bool = True,
    seed: int | np.random.Generator = 0,
) -> Interval:
    """Percentile interval of ``statistic`` over inputs resampled with replacement: how much the figure
    would move on another draw of evaluation sentences of the same size.

    ``recentre`` (the default) moves the resampled values so that their mean is the observed value
    before taking percentiles. A with-replacement resample holds each input ~0.63 times on average and
    some several times; mutual information reads the repeated (language, prompt) pairs as agreement,
    so resampled AMI sits above the observed one by several standard errors when prompts are many and
    inputs per language few (about +0.05 at 114 languages x 200 lines and 256 prompts, where the
    standard error is 0.003), while the spread of the resamples still matches the spread over fresh
    draws. The removed offset is reported as ``shift``. Where inputs per language are very few (about
    30 per language with 256 prompts) the resamples spread less than fresh draws do (~0.6x), so read the
    interval there as a lower bound on the uncertainty; from ~100 inputs per language it matches."""
    if resamples < 2 or not 0 < level < 1:
        raise ValueError(f"resamples={resamples} must be >= 2 and level={level} in (0, 1)")
    labels, assignment = np.asarray(labels), np.asarray(assignment)
    rng = _generator(seed)
    n = len(labels)
    observed = statistic(labels, assignment)
    values = np.empty(resamples)
    for k in range(resamples):
        index = rng.integers(0, n, n)
        values[k] = statistic(labels[index], assignment[index])
    shift = float(values.mean() - observed)
    if recentre:
        values = values - shift
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return Interval(float(low), float(high), level, resamples, shift)


# ------------------------------------------------------------------------------------------- soft view


def mean_routing_by_label(weights: np.ndarray, labels: np.ndarray, num_labels: int) -> np.ndarray:
    """[num_labels, M] mean of the retrieval-weight rows of each label (a distribution per language).
    An absent label has no distribution: ValueError naming it."""
    weights, labels = np.asarray(weights, np.float64), np.asarray(labels)
    out = np.empty((num_labels, weights.shape[1]))
    for i in range(num_labels):
        rows = weights[labels == i]
        if not len(rows):
            raise ValueError(f"label {i} has no input")
        out[i] = rows.mean(axis=0)
    return out


def entropy(distributions: np.ndarray) -> np.ndarray:
    """Shannon entropy in nats along the last axis (0 log 0 = 0); rows are renormalised to sum to 1."""
    p = np.asarray(distributions, np.float64)
    p = p / p.sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p), 0.0)
    return -terms.sum(axis=-1)


def js_divergence_matrix(distributions: np.ndarray) -> np.ndarray:
    """[L, L] Jensen-Shannon divergence (nats) between the rows: symmetric, zero diagonal, in [0, ln 2]."""
    p = np.asarray(distributions, np.float64)
    p = p / p.sum(axis=1, keepdims=True)
    mixture = (p[:, None, :] + p[None, :, :]) / 2
    out = entropy(mixture) - (entropy(p)[:, None] + entropy(p)[None, :]) / 2
    out = np.clip((out + out.T) / 2, 0.0, np.log(2))  # float round-off only
    np.fill_diagonal(out, 0.0)
    return out


def js_distance_matrix(distributions: np.ndarray) -> np.ndarray:
    """[L, L] Jensen-Shannon distance in [0, 1]: sqrt of the divergence in bits, a metric (so it suits
    average-linkage clustering and the Mantel test)."""
    return np.sqrt(js_divergence_matrix(distributions) / np.log(2))


def effective_prompts(weights: np.ndarray) -> float:
    """exp(entropy of the mean routing over all inputs): M when the pool is used uniformly, 1 when every
    input goes to the same prompt. A pool can reach M with every input one-hot on its own prompt."""
    return float(np.exp(entropy(np.asarray(weights, np.float64).mean(axis=0))))


def mean_input_entropy(weights: np.ndarray) -> float:
    """Mean per-input routing entropy (nats): 0 for hard routing, ln M for uniform weights."""
    return float(entropy(weights).mean())


def fraction_of_pool_top(weights: np.ndarray) -> float:
    """Fraction of the M prompts that are some input's argmax prompt."""
    weights = np.asarray(weights)
    return float(len(np.unique(weights.argmax(axis=1))) / weights.shape[1])


# --------------------------------------------------------------------------------------------- Mantel


def different_category_matrix(categories: Sequence[str]) -> np.ndarray:
    """[L, L] 0/1 matrix: 1 where two languages are in different categories (scripts, families)."""
    values = np.asarray(categories, dtype=object)
    return (values[:, None] != values[None, :]).astype(np.float64)


def within_strata_permutation(strata: Sequence[str], rng: np.random.Generator) -> np.ndarray:
    """A permutation of ``range(len(strata))`` that maps every index to one of its own stratum."""
    values = np.asarray(strata, dtype=object)
    order = np.arange(len(values))
    for stratum in dict.fromkeys(values.tolist()):
        members = np.flatnonzero(values == stratum)
        order[members] = rng.permutation(members)
    return order


@dataclasses.dataclass(frozen=True)
class MantelTest:
    r: float  # Pearson correlation of the off-diagonal entries
    p_value: float  # one-sided (positive association), from permuting the languages
    permutations: int


def mantel_test(
    distances: np.ndarray,
    reference: np.ndarray,
    *,
    permutations: int = 999,
    seed: int | np.random.Generator = 0,
    strata: Sequence[str] | None = None,
) -> MantelTest:
    """Correlation between two symmetric [L, L] distance matrices over the pairs i < j, with a p-value
    from relabelling the languages of ``distances`` (rows and columns together). The pairs share
    languages, so they are not independent: permuting whole languages keeps that dependence in the null.
    A constant ``reference`` (e.g. every language in one script) has no correlation: r and p are NaN.
    ``strata`` (one label per language): relabel only within a stratum (``within_strata_permutation``);
    a stratum of one language never moves, so with no stratum of two the p-value is 1."""
    a, b = np.asarray(distances, np.float64), np.asarray(reference, np.float64)
    if a.shape != b.shape or a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"Mantel test needs two square matrices of one shape, got {a.shape} and {b.shape}")
    if permutations < 1:
        raise ValueError(f"permutations={permutations} must be >= 1")
    if strata is not None and len(strata) != a.shape[0]:
        raise ValueError(f"strata has {len(strata)} labels for {a.shape[0]} languages")
    upper = np.triu_indices(a.shape[0], k=1)
    y = b[upper]
    if len(y) < 2 or np.ptp(y) == 0 or np.ptp(a[upper]) == 0:
        return MantelTest(float("nan"), float("nan"), permutations)
    y = (y - y.mean()) / y.std()

    def correlation(matrix: np.ndarray) -> float:
        x = matrix[upper]
        return float(np.mean((x - x.mean()) / x.std() * y))

    rng = _generator(seed)
    observed = correlation(a)
    null = np.empty(permutations)
    for k in range(permutations):
        order = rng.permutation(a.shape[0]) if strata is None else within_strata_permutation(strata, rng)
        null[k] = correlation(a[np.ix_(order, order)])
    p_value = (1 + np.count_nonzero(null >= observed - _TIE)) / (1 + permutations)
    return MantelTest(observed, float(p_value), permutations)
