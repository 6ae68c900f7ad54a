"""Prompt-pool analysis: does the pool cluster inputs by language without being told the language?

Hard view: AMI (chance-corrected, ``evals.clustering``) of the argmax prompt against the language and
against the script, each with a label-shuffle permutation test and a bootstrap interval; NMI is kept
for comparison with older runs but is not corrected for chance. Soft view: per-language mean retrieval
weights (a language x prompt heatmap), their Jensen-Shannon distances (a language x language similarity
heatmap and an average-linkage dendrogram from routing alone), the effective number of prompts in use,
the mean per-input routing entropy and the fraction of the pool that is some input's top prompt; Mantel
tests of the routing distances against "different script", "different family" and "different branch"
(``data_pipelines.languages``). For a baseline (no pool) and, for comparison, XLM-P too: NMI and AMI of
k-means clusters (k = number of languages) of the query vectors against the language labels, and the
per-language query centroids projected to 2-D with PCA.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # files only, never a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.cluster import hierarchy  # noqa: E402
from scipy.spatial.distance import squareform  # noqa: E402
from sklearn.cluster import KMeans  # noqa: E402
from sklearn.metrics import normalized_mutual_info_score  # noqa: E402

from data_pipelines import languages as language_table  # noqa: E402
from xlmp_jax.evals import clustering  # noqa: E402
from xlmp_jax.hf.encoder import Encoder, Tokenizer  # noqa: E402

Row = tuple[str, str, float]


def nmi(labels: Sequence[int], assignment: Sequence[int]) -> float:
    """Normalised mutual information (arithmetic mean normalisation, sklearn's default)."""
    return float(normalized_mutual_info_score(np.asarray(labels), np.asarray(assignment)))


def mean_by_label(values: np.ndarray, labels: np.ndarray, num_labels: int) -> np.ndarray:
    """[num_labels, ...] mean of ``values`` rows per label (zeros for an absent label)."""
    out = np.zeros((num_labels, *values.shape[1:]), np.float64)
    for i in range(num_labels):
        if (labels == i).any():
            out[i] = values[labels == i].mean(axis=0)
    return out


def pca_2d(points: np.ndarray) -> np.ndarray:
    """[N, 2] projection onto the first two principal components (zero-padded if rank < 2)."""
    centred = points - points.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    projected = centred @ vt[:2].T
    if projected.shape[1] < 2:
        projected = np.pad(projected, ((0, 0), (0, 2 - projected.shape[1])))
    return projected


def kmeans_clusters(vectors: np.ndarray, num_clusters: int, seed: int = 0) -> np.ndarray:
    """k-means cluster of each row of ``vectors`` (L2-normalised: the pool scores by cosine)."""
    if num_clusters < 2 or len(vectors) <= num_clusters:
        raise ValueError(f"k-means needs >= 2 clusters and more points than clusters, got {num_clusters}")
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return KMeans(n_clusters=num_clusters, n_init=10, random_state=seed).fit_predict(unit)


def kmeans_nmi(vectors: np.ndarray, labels: np.ndarray, num_clusters: int, seed: int = 0) -> float:
    """NMI of k-means clusters of ``vectors`` against labels (not chance-corrected: see ``kmeans_clusters``
    and ``clustering.ami``)."""
    return nmi(labels, kmeans_clusters(vectors, num_clusters, seed))


def plot_heatmap(matrix: np.ndarray, languages: Sequence[str], path: str, title: str = "") -> str:
    """Language x prompt heatmap of mean retrieval weights, saved as PNG."""
    fig, ax = plt.subplots(figsize=(max(6.0, min(20.0, matrix.shape[1] / 12)), 1.0 + 0.35 * len(languages)))
    image = ax.imshow(matrix, aspect="auto", interpolation="nearest", cmap="viridis")
    ax.set_yticks(range(len(languages)), labels=list(languages))
    ax.set_xlabel("prompt")
    ax.set_title(title or "mean retrieval weight per language")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_centroids(points: np.ndarray, languages: Sequence[str], path: str, title: str = "") -> str:
    """Scatter of 2-D projected per-language query centroids, labelled, saved as PNG."""
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.scatter(points[:, 0], points[:, 1])
    for (x, y), lang in zip(points, languages, strict=True):
        ax.annotate(lang, (x, y), textcoords="offset points", xytext=(3, 3))
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(title or "per-language query centroids (PCA)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def routing_order(js_distance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(average-linkage tree, leaf order) of languages from their routing JS distances alone."""
    tree = hierarchy.linkage(squareform(js_distance, checks=False), method="average")
    return tree, hierarchy.leaves_list(tree)


def plot_routing_similarity(js_distance: np.ndarray, languages: Sequence[str], path: str, title: str = "") -> str:
    """Language x language heatmap of routing similarity (1 - JS distance), rows and columns in the
    dendrogram's leaf order so that languages routed alike form blocks; saved as PNG."""
    _, order = routing_order(js_distance)
    names = [languages[i] for i in order]
    side = max(5.0, min(30.0, 0.16 * len(languages) + 3))
    fig, ax = plt.subplots(figsize=(side + 1, side))
    image = ax.imshow(1 - js_distance[np.ix_(order, order)], vmin=0, vmax=1, interpolation="nearest", cmap="magma")
    fontsize = 8 if len(languages) <= 40 else 5
    ax.set_xticks(range(len(names)), labels=names, rotation=90, fontsize=fontsize)
    ax.set_yticks(range(len(names)), labels=names, fontsize=fontsize)
    ax.set_title(title or "routing similarity (1 - Jensen-Shannon distance)")
    fig.colorbar(image, ax=ax, fraction=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_routing_dendrogram(js_distance: np.ndarray, languages: Sequence[str], path: str, title: str = "") -> str:
    """Average-linkage dendrogram of languages from routing alone (JS distances), saved as PNG. Leaf
    labels carry the script (``data_pipelines.languages``) so script-driven merges are visible."""
    tree, _ = routing_order(js_distance)
    labels = [f"{lang} ({language_table.script(lang, '?')})" for lang in languages]
    fig, ax = plt.subplots(figsize=(6, max(4.0, min(40.0, 0.18 * len(languages) + 1.5))))
    hierarchy.dendrogram(tree, labels=labels, orientation="left", ax=ax, leaf_font_size=7, color_threshold=0)
    ax.set_xlabel("Jensen-Shannon distance of mean routing")
    ax.set_title(title or "languages clustered by routing alone")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


@dataclasses.dataclass(frozen=True)
class Repeats:
    """How many resamples the significance figures use (more: slower, steadier p-values and intervals)."""

    shuffles: int = 200  # label shuffles per AMI permutation test (>= 100 for a 99th percentile)
    resamples: int = 200  # bootstrap resamples per AMI interval
    mantel_permutations: int = 999


def ami_rows(name: str, labels: np.ndarray, assignment: np.ndarray, repeats: Repeats, seed: int) -> list[Row]:
    """``ami_<name>`` with its shuffle test (mean, 99th percentile, p-value) and 95 % bootstrap interval
    (recentred on the observed value; the offset removed is ``ami_<name>_bootstrap_shift``)."""
    test = clustering.permutation_test(labels, assignment, shuffles=repeats.shuffles, seed=seed)
    interval = clustering.bootstrap_interval(labels, assignment, resamples=repeats.resamples, seed=seed + 1)
    return [
        ("all", f"ami_{name}", test.observed),
        ("all", f"ami_{name}_shuffled_mean", test.shuffled_mean),
        ("all", f"ami_{name}_shuffled_p99", test.shuffled_p99),
        ("all", f"ami_{name}_p_value", test.p_value),
        ("all", f"ami_{name}_ci_low", interval.low),
        ("all", f"ami_{name}_ci_high", interval.high),
        ("all", f"ami_{name}_bootstrap_shift", interval.shift),  # removed from the interval, see clustering
    ]


def routing_rows(
    weights: np.ndarray,
    labels: np.ndarray,
    languages: Sequence[str],
    out_dir: str,
    *,
    title: str,
    seed: int,
    repeats: Repeats,
) -> list[Row]:
    """Every row of the pool's routing (hard and soft views, Mantel tests) and its plots."""
    selected = weights.argmax(axis=1)
    rows: list[Row] = [
        ("all", "nmi_argmax_prompt", nmi(labels, selected)),
        ("all", "prompts_used", float(len(np.unique(selected)))),
        ("all", "pool_fraction_top", clustering.fraction_of_pool_top(weights)),
        ("all", "effective_prompts", clustering.effective_prompts(weights)),
        ("all", "mean_input_entropy", clustering.mean_input_entropy(weights)),
    ]
    rows += ami_rows("prompt_language", labels, selected, repeats, seed)
    scripts = np.asarray([language_table.script(lang, language_table.UNKNOWN) for lang in languages], object)
    known = scripts[labels] != language_table.UNKNOWN  # inputs of languages the table lacks are left out
    rows.append(("all", "languages_with_metadata", float(np.count_nonzero(scripts != language_table.UNKNOWN))))
    if len(set(scripts[labels][known])) >= 2:
        script_ids = np.unique(scripts[labels][known], return_inverse=True)[1]
        rows += ami_rows("prompt_script", script_ids, selected[known], repeats, seed + 2)

    mean_weights = clustering.mean_routing_by_label(weights, labels, len(languages))
    np.save(os.path.join(out_dir, "mean_weights.npy"), mean_weights)
    plot_heatmap(mean_weights, languages, os.path.join(out_dir, "weights_heatmap.png"), title)
    for i, lang in enumerate(languages):
        w = mean_weights[i]
        rows += [
            (lang, "top_prompt", float(w.argmax())),
            (lang, "top_prompt_weight", float(w.max())),
            (lang, "weight_entropy", float(clustering.entropy(w))),
        ]
    if len(languages) < 2:
        return rows
    js_distance = clustering.js_distance_matrix(mean_weights)
    np.save(os.path.join(out_dir, "routing_js_distance.npy"), js_distance)
    plot_routing_similarity(js_distance, languages, os.path.join(out_dir, "routing_similarity.png"), title)
    plot_routing_dendrogram(js_distance, languages, os.path.join(out_dir, "routing_dendrogram.png"), title)
    with_metadata = [i for i, lang in enumerate(languages) if scripts[i] != language_table.UNKNOWN]
    distances = js_distance[np.ix_(with_metadata, with_metadata)]
    for k, (name, field) in enumerate(
        (("script", language_table.script), ("family", language_table.family), ("branch", language_table.branch))
    ):
        reference = clustering.different_category_matrix([field(languages[i]) for i in with_metadata])
        test = clustering.mantel_test(distances, reference, permutations=repeats.mantel_permutations, seed=seed + k)
        if np.isfinite(test.r):  # NaN: one category only (or < 3 languages), nothing to correlate
            rows += [("all", f"mantel_r_{name}", test.r), ("all", f"mantel_p_{name}", test.p_value)]
    return rows


def analyse(
    weights: np.ndarray | None,
    query: np.ndarray,
    labels: np.ndarray,
    languages: Sequence[str],
    out_dir: str,
    *,
    title: str = "",
    seed: int = 0,
    repeats: Repeats = Repeats(),
) -> list[Row]:
    """Rows + plots from per-sentence pool outputs; ``weights`` None for a model without a pool."""
    os.makedirs(out_dir, exist_ok=True)
    labels = np.asarray(labels)
    present = [i for i in range(len(languages)) if (labels == i).any()]  # a language without text has no rows
    if len(present) < len(languages):
        languages = [languages[i] for i in present]
        labels = np.searchsorted(present, labels)
    rows: list[Row] = []
    centroids = mean_by_label(query, labels, len(languages))
    plot_centroids(pca_2d(centroids), languages, os.path.join(out_dir, "query_centroids.png"), title)
    if len(languages) >= 2 and len(query) > len(languages):
        clusters = kmeans_clusters(query, len(languages), seed)
        rows.append(("all", "nmi_kmeans_query", nmi(labels, clusters)))
        rows.append(("all", "ami_kmeans_query", clustering.ami(labels, clusters)))
    if weights is not None:
        rows += routing_rows(np.asarray(weights), labels, languages, out_dir, title=title, seed=seed, repeats=repeats)
    return rows


def pool_eval(
    encoder: Encoder,
    tokenizer: Tokenizer,
    texts_by_language: Mapping[str, Sequence[str]],
    out_dir: str,
    *,
    title: str = "",
    seed: int = 0,
    repeats: Repeats = Repeats(),
) -> list[Row]:
    """Embeds every language's sentences and runs ``analyse`` on the pool's weights and queries."""
    languages = list(texts_by_language)
    texts = [t for lang in languages for t in texts_by_language[lang]]
    labels = np.asarray([i for i, lang in enumerate(languages) for _ in texts_by_language[lang]])
    out = encoder.embed_texts(tokenizer, texts, layer=0)
    return analyse(
        out.get("weights"), out["query"], labels, languages, out_dir, title=title, seed=seed, repeats=repeats
    )
