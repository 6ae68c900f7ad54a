"""What clusterers with no learned pool score on the pool eval's sentences: the references its AMI is read against.

AMI(top prompt, language) above shuffled labels only rules out "no association". Whether the pool routes by
language, rather than by what any clusterer reads off the surface, shows beside references on the same
sentences: the script alone (a lookup, no model), TF-IDF of the model's own token ids -> truncated SVD ->
k-means, k-means of the model's query vectors (what the pool scores), a pool of random keys scoring the same
queries (routing with nothing learned in the keys) and the pool at its random start (step 0: the params
rebuilt from the run's config and seed, ``state.initial_params``). k-means runs at k = the number of
languages and at k = the pool size; every assignment gets the pool's own AMI rows (shuffle test, bootstrap
interval) against language and against script.

Within each script holding >= 3 languages, where the script cannot help, the same question is asked on that
group's sentences alone: the pool's top prompt, the random keys and step 0 restricted to the group, and
TF-IDF and query k-means refitted on the group (k = its languages).
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from scipy import sparse
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfTransformer

from data_pipelines import languages as language_table
from xlmp_jax.evals.clustering import kmeans_clusters

Row = tuple[str, str, float]
AmiRows = Callable[[str, np.ndarray, np.ndarray, int, str], list[Row]]  # (name, labels, assignment, seed, where)

TFIDF_DIMENSIONS = 100  # SVD components of the TF-IDF matrix (fewer when the sentences or ids are fewer)
MIN_GROUP_LANGUAGES = 3  # a script group is analysed alone from this many languages


@dataclasses.dataclass(frozen=True)
class Sentences:
    """The pool eval's sentences as every reference sees them (one row each)."""

    labels: np.ndarray  # [N] language index into ``languages``
    languages: Sequence[str]
    query: np.ndarray  # [N, D] the model's query (a pool's own, else the mean-pooled embedding output)
    token_ids: Sequence[Sequence[int]] | None = None  # the tokenizer's ids, no <s> / </s>; None: no TF-IDF
    pool_size: int = 0  # k of the pool-size references and the random pool's keys; 0: none
    key_std: float = 0.02  # the random keys' normal init (the model's ``pool.init_std``)
    score: str = "cosine"  # how the random keys score a query (the model's ``pool.score``)
    initial_prompts: np.ndarray | None = None  # [N] top prompt of the model at step 0; None: not available

    def subset(self, rows: np.ndarray, labels: np.ndarray, languages: Sequence[str]) -> Sentences:
        """The sentences at ``rows`` alone, relabelled over ``languages``."""
        return dataclasses.replace(
            self,
            labels=labels,
            languages=list(languages),
            query=self.query[rows],
            token_ids=None if self.token_ids is None else [self.token_ids[i] for i in rows],
            initial_prompts=None if self.initial_prompts is None else self.initial_prompts[rows],
        )


def script_of_languages(languages: Sequence[str]) -> np.ndarray:
    """Per language its ISO 15924 script, ``languages.UNKNOWN`` where the table lacks it."""
    return np.asarray([language_table.script(lang, language_table.UNKNOWN) for lang in languages], object)


def script_labels(labels: np.ndarray, languages: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(script index of each known sentence, mask of the sentences whose language has a known script): the
    oracle script lookup as a clustering."""
    scripts = script_of_languages(languages)[labels]
    known = scripts != language_table.UNKNOWN
    return np.unique(scripts[known], return_inverse=True)[1].reshape(-1), known


def tfidf_features(token_ids: Sequence[Sequence[int]], dimensions: int, seed: int) -> np.ndarray:
    """[N, <= dimensions] TF-IDF of the token ids (sublinear counts), reduced by truncated SVD: the surface a
    clusterer with no model sees."""
    used = np.unique(np.fromiter((i for ids in token_ids for i in ids), np.int64))
    columns = [np.searchsorted(used, np.asarray(ids, np.int64)) for ids in token_ids]
    rows = np.repeat(np.arange(len(token_ids)), [len(c) for c in columns])
    counts = sparse.csr_matrix(
        (np.ones(len(rows)), (rows, np.concatenate(columns) if columns else rows)), (len(token_ids), len(used))
    )
    tfidf = TfidfTransformer(sublinear_tf=True).fit_transform(counts)
    components = min(dimensions, len(token_ids) - 1, len(used) - 1)
    if components < 1:
        return tfidf.toarray()
    return TruncatedSVD(n_components=components, random_state=seed).fit_transform(tfidf)


def random_key_prompts(query: np.ndarray, num_keys: int, *, key_std: float, score: str, seed: int) -> np.ndarray:
    """Top prompt of each query in a pool of ``num_keys`` random keys (normal, std ``key_std``, drawn from
    ``seed``): the routing a pool makes with nothing learned in its keys. The temperature and the soft mix
    do not move an argmax."""
    keys = np.random.default_rng(seed).normal(0.0, key_std, (num_keys, query.shape[1]))
    query = np.asarray(query, np.float64)
    if score == "cosine":
        query = query / np.maximum(np.linalg.norm(query, axis=1, keepdims=True), 1e-12)
        keys = keys / np.maximum(np.linalg.norm(keys, axis=1, keepdims=True), 1e-12)
    return (query @ keys.T).argmax(axis=1)


def _can_cluster(count: int, k: int) -> bool:
    return k >= 2 and count > k


def clustered(sentences: Sentences, ks: Mapping[str, int], seed: int) -> dict[str, np.ndarray]:
    """TF-IDF k-means (``tfidf_<tag>``, where there are token ids) and query k-means
    (``kmeans_query_<tag>``) of the sentences, at each ``k`` of ``{tag: k}`` that they allow."""
    n, out = len(sentences.labels), {}
    if sentences.token_ids is not None and any(_can_cluster(n, k) for k in ks.values()):
        features = tfidf_features(sentences.token_ids, TFIDF_DIMENSIONS, seed)
        out.update({f"tfidf_{tag}": kmeans_clusters(features, k, seed) for tag, k in ks.items() if _can_cluster(n, k)})
    out.update(
        {
            f"kmeans_query_{tag}": kmeans_clusters(sentences.query, k, seed)
            for tag, k in ks.items()
            if _can_cluster(n, k)
        }
    )
    return out


def routed(sentences: Sentences, seed: int) -> dict[str, np.ndarray]:
    """The top prompt of a random-key pool (``random_keys``, with a pool size) and of the model at step 0
    (``step0_prompt``, where given). Both are per sentence, so on a subset they equal the restriction."""
    out = {}
    if sentences.pool_size >= 2:
        out["random_keys"] = random_key_prompts(
            sentences.query, sentences.pool_size, key_std=sentences.key_std, score=sentences.score, seed=seed
        )
    if sentences.initial_prompts is not None:
        out["step0_prompt"] = np.asarray(sentences.initial_prompts)
    return out


def assignments(sentences: Sentences, seed: int) -> dict[str, np.ndarray]:
    """Every reference's cluster per sentence that ``sentences`` allow, by row-name stem."""
    ks = {"klang": len(sentences.languages), "kpool": sentences.pool_size}
    return {**clustered(sentences, ks, seed), **routed(sentences, seed)}


def _seed(seed: int, *names: str) -> int:
    """The shuffle and bootstrap seed of one row family: fixed by its names, whichever other rows exist."""
    return seed + zlib.crc32("|".join(names).encode()) % 100_000


def reference_rows(sentences: Sentences, ami_rows: AmiRows, seed: int) -> list[Row]:
    """Over all sentences: AMI(script, language) (the script lookup) and every reference's AMI against
    language and against script, each with ``ami_rows``' shuffle test and bootstrap interval."""
    script_ids, known = script_labels(sentences.labels, sentences.languages)
    rows: list[Row] = []
    several_scripts = len(np.unique(script_ids)) >= 2
    if several_scripts:
        rows += ami_rows("script_language", sentences.labels[known], script_ids, seed, "all")
    for name, assignment in assignments(sentences, seed).items():
        rows += ami_rows(f"{name}_language", sentences.labels, assignment, _seed(seed, name, "language"), "all")
        if several_scripts:
            rows += ami_rows(f"{name}_script", script_ids, assignment[known], _seed(seed, name, "script"), "all")
    return rows


def script_groups(languages: Sequence[str], minimum: int = MIN_GROUP_LANGUAGES) -> dict[str, list[int]]:
    """Script -> indices of its languages, for the known scripts holding >= ``minimum`` of ``languages``."""
    scripts = script_of_languages(languages)
    groups = {s: np.flatnonzero(scripts == s).tolist() for s in dict.fromkeys(scripts.tolist())}
    return {s: m for s, m in groups.items() if s != language_table.UNKNOWN and len(m) >= minimum}


def group_sentences(sentences: Sentences, members: Sequence[int]) -> tuple[Sentences, np.ndarray]:
    """(the group's sentences relabelled 0..len(members)-1, their rows in ``sentences``)."""
    rows = np.flatnonzero(np.isin(sentences.labels, members))
    labels = np.searchsorted(np.asarray(members), sentences.labels[rows])
    return sentences.subset(rows, labels, [sentences.languages[i] for i in members]), rows


def within_script_rows(sentences: Sentences, prompts: np.ndarray | None, ami_rows: AmiRows, seed: int) -> list[Row]:
    """Per script group (rows at ``script:<Ssss>``): its languages and sentences, and AMI against language of
    the pool's top prompt (``prompts``, restricted to the group) and of the references (the random keys and
    step 0 restricted; TF-IDF and query k-means refitted on the group, k = its languages)."""
    rows: list[Row] = []
    for script, members in script_groups(sentences.languages).items():
        where = f"script:{script}"
        group, index = group_sentences(sentences, members)
        rows += [(where, "languages", float(len(members))), (where, "sentences", float(len(index)))]
        local = {"prompt": prompts[index]} if prompts is not None else {}
        local.update(clustered(group, {"klang": len(members)}, seed))
        local.update(routed(group, seed))
        for name, assignment in local.items():
            rows += ami_rows(f"{name}_language", group.labels, assignment, _seed(seed, name, where), where)
    return rows
