"""Prompt-pool analysis: does the pool cluster inputs by language without being told the language?

Per language: the mean retrieval weights over the M prompts (a language x prompt heatmap), the centroid
of its queries (projected to 2-D with PCA), and NMI between the argmax-selected prompt and the language
label. For a baseline (no pool) and, for comparison, XLM-P too: NMI between k-means clusters (k = number
of languages) of the query vectors (mean-pooled embedding-layer outputs) and the language labels.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # files only, never a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.cluster import KMeans  # noqa: E402
from sklearn.metrics import normalized_mutual_info_score  # noqa: E402

from xlmp_jax.evals.encoder import Encoder, Tokenizer  # noqa: E402

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


def kmeans_nmi(vectors: np.ndarray, labels: np.ndarray, num_clusters: int, seed: int = 0) -> float:
    """NMI of k-means clusters of ``vectors`` (L2-normalised: the pool scores by cosine) against labels."""
    if num_clusters < 2 or len(vectors) <= num_clusters:
        raise ValueError(f"k-means NMI needs >= 2 clusters and more points than clusters, got {num_clusters}")
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    clusters = KMeans(n_clusters=num_clusters, n_init=10, random_state=seed).fit_predict(unit)
    return nmi(labels, clusters)


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


def analyse(
    weights: np.ndarray | None,
    query: np.ndarray,
    labels: np.ndarray,
    languages: Sequence[str],
    out_dir: str,
    *,
    title: str = "",
    seed: int = 0,
) -> list[Row]:
    """Rows + plots from per-sentence pool outputs; ``weights`` None for a model without a pool."""
    os.makedirs(out_dir, exist_ok=True)
    labels = np.asarray(labels)
    rows: list[Row] = []
    centroids = mean_by_label(query, labels, len(languages))
    plot_centroids(pca_2d(centroids), languages, os.path.join(out_dir, "query_centroids.png"), title)
    if len(languages) >= 2 and len(query) > len(languages):
        rows.append(("all", "nmi_kmeans_query", kmeans_nmi(query, labels, len(languages), seed)))
    if weights is not None:
        mean_weights = mean_by_label(weights, labels, len(languages))
        np.save(os.path.join(out_dir, "mean_weights.npy"), mean_weights)
        plot_heatmap(mean_weights, languages, os.path.join(out_dir, "weights_heatmap.png"), title)
        selected = weights.argmax(axis=1)
        rows.append(("all", "nmi_argmax_prompt", nmi(labels, selected)))
        rows.append(("all", "prompts_used", float(len(np.unique(selected)))))
        for i, lang in enumerate(languages):
            w = mean_weights[i]
            rows += [
                (lang, "top_prompt", float(w.argmax())),
                (lang, "top_prompt_weight", float(w.max())),
                (lang, "weight_entropy", float(-(w * np.log(np.maximum(w, 1e-12))).sum())),
            ]
    return rows


def pool_eval(
    encoder: Encoder,
    tokenizer: Tokenizer,
    texts_by_language: Mapping[str, Sequence[str]],
    out_dir: str,
    *,
    title: str = "",
    seed: int = 0,
) -> list[Row]:
    """Embeds every language's sentences and runs ``analyse`` on the pool's weights and queries."""
    languages = list(texts_by_language)
    texts = [t for lang in languages for t in texts_by_language[lang]]
    labels = np.asarray([i for i, lang in enumerate(languages) for _ in texts_by_language[lang]])
    out = encoder.embed_texts(tokenizer, texts, layer=0)
    return analyse(out.get("weights"), out["query"], labels, languages, out_dir, title=title, seed=seed)
