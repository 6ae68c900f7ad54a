"""The surface-cue baseline of a transfer task: a bag of character n-grams, trained on English only.

What a model must beat before its transfer score says anything about learned representations: TF-IDF over
character 1-4-grams within word boundaries (sublinear counts) and a multinomial logistic regression, fitted
on the English training strings and scored as the models are. In another language it can only use what the
strings share with English on the surface (names, numbers, loanwords, the script itself), so the gap between
its English and its target-language accuracy is the part of the task that needs cross-lingual knowledge.
scikit-learn, no JAX: the same numbers on any machine. One BLAS thread: the problem is small (a few hundred
strings), and beside JAX's threads more only contend (20x slower fits on 2 busy cores).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from threadpoolctl import threadpool_limits

NGRAMS = (1, 4)  # character n-gram lengths. Our choice, the usual range for short strings.
C = 10.0  # inverse L2 strength: light regularisation, as suits sparse n-gram counts. Our choice.


def fit(texts: Sequence[str], labels: Sequence[str], ngrams: tuple[int, int] = NGRAMS, c: float = C) -> Pipeline:
    """The baseline fitted on ``texts`` (English) and their ``labels`` (at least two distinct)."""
    if len(set(labels)) < 2:
        raise ValueError(f"the n-gram baseline needs at least 2 distinct labels, got {sorted(set(labels))}")
    model = make_pipeline(
        TfidfVectorizer(analyzer="char_wb", ngram_range=ngrams, sublinear_tf=True, lowercase=True),
        LogisticRegression(C=c, max_iter=2000),
    )
    with threadpool_limits(1):
        return model.fit(list(texts), list(labels))


def accuracy(model: Pipeline, texts: Sequence[str], labels: Sequence[str]) -> float:
    """Fraction of ``texts`` the fitted baseline labels correctly."""
    if not texts:
        raise ValueError("accuracy of the n-gram baseline on no examples")
    with threadpool_limits(1):
        predicted = model.predict(list(texts))
    return float(np.mean(predicted == np.asarray(list(labels))))
