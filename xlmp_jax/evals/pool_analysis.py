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
per-language query centroids projected to 2-D with PCA. Beside every AMI, the references on the same sentences
(``pool_references``: the script lookup, TF-IDF and query k-means, random keys, the pool at step 0) and the same
questions within each script group of >= 3 languages; family against routing also with a null that permutes
languages only within their script.
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
from sklearn.metrics import normalized_mutual_info_score  # noqa: E402

from data_pipelines import languages as language_table  # noqa: E402
from xlmp_jax.evals import clustering, pool_references  # noqa: E402
from xlmp_jax.hf.encoder import Encoder, Tokenizer, with_specials  # noqa: E402
from xlmp_jax.model.prompt_pool import PoolConfig  # noqa: E402

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


kmeans_clusters = clustering.kmeans_clusters  # where it was first defined; the evals' tests read it here


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


def ami_rows(
    name: str, labels: np.ndarray, assignment: np.ndarray, repeats: Repeats, seed: int, where: str = "all"
) -> list[Row]:
    """``ami_<name>`` with its shuffle test (mean, 99th percentile, p-value) and 95 % bootstrap interval
    (recentred on the observed value; the offset removed is ``ami_<name>_bootstrap_shift``), in the rows of
    ``where`` ("all", or a subset such as ``script:Cyrl``)."""
    test = clustering.permutation_test(labels, assignment, shuffles=repeats.shuffles, seed=seed)
    interval = clustering.bootstrap_interval(labels, assignment, resamples=repeats.resamples, seed=seed + 1)
    return [
        (where, f"ami_{name}", test.observed),
        (where, f"ami_{name}_shuffled_mean", test.shuffled_mean),
        (where, f"ami_{name}_shuffled_p99", test.shuffled_p99),
        (where, f"ami_{name}_p_value", test.p_value),
        (where, f"ami_{name}_ci_low", interval.low),
        (where, f"ami_{name}_ci_high", interval.high),
        (where, f"ami_{name}_bootstrap_shift", interval.shift),  # removed from the interval, see clustering
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
        if np.isfinite(test.r) and name != "script":  # family is nested in script: permute within script only
            within = clustering.mantel_test(
                distances, reference, permutations=repeats.mantel_permutations, seed=seed + 5 + k,
                strata=scripts[with_metadata],
            )  # fmt: skip
            rows.append(("all", f"mantel_p_{name}_within_script", within.p_value))
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
    token_ids: Sequence[Sequence[int]] | None = None,
    pool_size: int | None = None,
    key_std: float = 0.02,
    score: str = "cosine",
    initial_weights: np.ndarray | None = None,
) -> list[Row]:
    """Rows + plots from per-sentence pool outputs; ``weights`` None for a model without a pool. The
    references (``pool_references``) read ``token_ids`` (TF-IDF), ``pool_size`` (default: the pool's M; 0
    none), ``key_std`` and ``score`` (the random keys) and ``initial_weights`` (the model at step 0)."""
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
    sentences = pool_references.Sentences(
        labels=labels,
        languages=languages,
        query=np.asarray(query),
        token_ids=token_ids,
        pool_size=(0 if weights is None else np.shape(weights)[1]) if pool_size is None else pool_size,
        key_std=key_std,
        score=score,
        initial_prompts=None if initial_weights is None else np.asarray(initial_weights).argmax(axis=1),
    )

    def scored(name: str, truth: np.ndarray, assignment: np.ndarray, at_seed: int, where: str) -> list[Row]:
        return ami_rows(name, truth, assignment, repeats, at_seed, where)

    rows += pool_references.reference_rows(sentences, scored, seed + 1000)
    prompts = None if weights is None else np.asarray(weights).argmax(axis=1)
    rows += pool_references.within_script_rows(sentences, prompts, scored, seed + 2000)
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
    initial: Encoder | None = None,
    pool_size: int = 0,
) -> list[Row]:
    """Embeds every language's sentences and runs ``analyse`` on the pool's weights and queries; ``initial``
    (the model at step 0, with a pool) gives the step-0 reference; ``pool_size`` is the k of the pool-size
    references for a model without a pool (a pool's own size wins)."""
    languages = list(texts_by_language)
    texts = [t for lang in languages for t in texts_by_language[lang]]
    labels = np.asarray([i for i, lang in enumerate(languages) for _ in texts_by_language[lang]])
    rows = [with_specials(tokenizer, tokenizer.encode(t), encoder.max_length) for t in texts]
    token_ids = [row[1:-1] for row in rows]  # what the model reads, without <s> and </s>
    out = encoder.embed_ids(rows, layer=0)
    pool = encoder.config.pool
    initial_weights = None
    if initial is not None and initial.has_pool:
        initial_weights = initial.embed_ids(rows, layer=0)["weights"]
    return analyse(
        out.get("weights"), out["query"], labels, languages, out_dir, title=title, seed=seed, repeats=repeats,
        token_ids=token_ids, pool_size=pool.size if pool is not None else pool_size,
        key_std=pool.init_std if pool is not None else PoolConfig().init_std,
        score=pool.score if pool is not None else PoolConfig().score, initial_weights=initial_weights,
    )  # fmt: skip
