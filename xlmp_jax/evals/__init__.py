"""Evaluations of XLM-P / XLM-R checkpoints, run over many checkpoints by ``xlmp_jax.evaluate``.

Every eval is one module here, listed in ``REGISTRY`` (eval name -> module), with ``NAME``, ``config()`` (its
settings block: the sweep config's ``c.<NAME>``) and ``run(ctx, cfg) -> rows`` (``context``). The evals:
``mlm`` (per-language masked-LM loss/accuracy), ``retrieval`` (XTREME Tatoeba-style sentence retrieval),
``pool`` (soft language clustering of the prompt pool, ``pool_analysis``), ``classification``, ``tagging`` and
``pos`` (zero-shot cross-lingual transfer: ``transfer``, its examples ``transfer_data``, the fine-tuning
``finetune``), ``tatoeba`` (XTREME's Tatoeba from TFDS or its files) and ``bucc`` (BUCC 2018 bitext mining
with the ratio margin, ``mining``), ``package`` (zero-shot transfer on the shipped package-group task,
its learning rate and step chosen on English dev, beside the character n-gram baseline ``ngram_baseline``),
``xquad``, ``mlqa`` and ``tydiqa`` (extractive QA, zero-shot: ``qa``, its
data ``qa_data``, windows ``qa_windows``, fine-tuning ``qa_finetune``, scores ``qa_metrics``).
Shared: ``encoder`` (jitted forward passes + tokenisation), ``context`` (what a cell's eval gets), ``heldout``
(held-out text), ``clustering`` (chance-corrected statistics), ``results`` (the tidy result table, summary,
plots, TensorBoard).

Modules are imported on first use (``load``): importing one piece of the package (say ``evals.clustering``) does
not import every eval's dependencies (matplotlib, scikit-learn, optax).
"""

from __future__ import annotations

import importlib
from types import ModuleType

REGISTRY: dict[str, str] = {
    "mlm": "xlmp_jax.evals.mlm",
    "retrieval": "xlmp_jax.evals.retrieval",
    "pool": "xlmp_jax.evals.pool",
    "classification": "xlmp_jax.evals.classification",
    "tagging": "xlmp_jax.evals.tagging",
    "pos": "xlmp_jax.evals.pos",
    "tatoeba": "xlmp_jax.evals.tatoeba",
    "bucc": "xlmp_jax.evals.bucc",
    "xquad": "xlmp_jax.evals.xquad",
    "mlqa": "xlmp_jax.evals.mlqa",
    "tydiqa": "xlmp_jax.evals.tydiqa",
    "package": "xlmp_jax.evals.package",
}


def load(name: str) -> ModuleType:
    """The module of the eval ``name`` (one of ``REGISTRY``)."""
    if name not in REGISTRY:
        raise ValueError(f"unknown eval {name!r} (known: {sorted(REGISTRY)})")
    return importlib.import_module(REGISTRY[name])
