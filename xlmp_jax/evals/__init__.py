"""Evaluations of XLM-P / XLM-R checkpoints, run over many checkpoints by ``xlmp_jax.evaluate``.

Every eval is one module here, listed in ``REGISTRY`` (eval name -> module), with ``NAME``, ``config()`` (its
settings block: the sweep config's ``c.<NAME>``) and ``run(ctx, cfg) -> rows`` (``context``). ``REGISTRY`` is the
list of evals; ARCHITECTURE.md (the module map, checked against ``REGISTRY`` by ``tests/test_architecture.py``)
says what each module here does and which of them the evals share.

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
