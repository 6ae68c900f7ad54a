"""Encoder layers as a Python loop (``layer_0`` .. ``layer_{N-1}``) or as one stacked scan (``layers/layer``,
each leaf with a leading [N] axis; ``model.scan_layers``), converted both ways.

The loop form is the canonical one: transformers import and export (``xlmp_jax.hf.names``) go through it,
so a model trained with scan exports exactly like one trained with the loop. ``to_layout`` converts any
tree that holds the params' structure at some level (params, the Adam moments, a whole train state's
dicts), so a state saved in one form can be brought to the other.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

_LAYER = re.compile(r"layer_(\d+)$")


def is_stacked(tree: Mapping[str, Any]) -> bool:
    """Whether a params-like dict holds scanned layers (``layers/layer``)."""
    return isinstance(tree.get("layers"), Mapping) and "layer" in tree["layers"]


def stack(tree: Mapping[str, Any]) -> dict[str, Any]:
    """``layer_0`` .. ``layer_{N-1}`` -> ``layers/layer`` with leaves stacked on a new leading axis."""
    numbered = sorted((int(m.group(1)), k) for k in tree if (m := _LAYER.match(k)))
    if [i for i, _ in numbered] != list(range(len(numbered))):
        raise ValueError(f"layers {[k for _, k in numbered]} are not layer_0 .. layer_{len(numbered) - 1}")
    if not numbered:
        raise ValueError("no layer_0 .. layer_N in the tree to stack")
    layers = [tree[k] for _, k in numbered]
    stacked = jax.tree.map(_stack, *layers)
    out = {k: v for k, v in tree.items() if not _LAYER.match(k)}
    out["layers"] = {"layer": stacked}
    return out


def _stack(*xs: Any) -> Any:
    if isinstance(xs[0], jax.ShapeDtypeStruct):  # abstract trees (shapes only) stack as shapes
        return jax.ShapeDtypeStruct((len(xs), *xs[0].shape), xs[0].dtype, sharding=_sharding(xs[0], 1))
    if all(isinstance(x, np.ndarray) for x in xs):
        return np.stack(xs)
    return jax.numpy.stack(xs)


def _index(x: Any, i: int) -> Any:
    if isinstance(x, jax.ShapeDtypeStruct):
        return jax.ShapeDtypeStruct(x.shape[1:], x.dtype, sharding=_sharding(x, -1))
    return x[i]


def _sharding(x: jax.ShapeDtypeStruct, axes: int) -> Any:
    """An abstract leaf's NamedSharding with the (replicated) layer axis added in front (1) or removed (-1)."""
    sharding = getattr(x, "sharding", None)
    if not isinstance(sharding, jax.sharding.NamedSharding):
        return None
    spec = tuple(sharding.spec)
    spec = (None, *spec) if axes > 0 else spec[1:]
    return jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec(*spec))


def unstack(tree: Mapping[str, Any]) -> dict[str, Any]:
    """``layers/layer`` (leading [N] axis) -> ``layer_0`` .. ``layer_{N-1}``."""
    if not is_stacked(tree):
        raise ValueError("no layers/layer in the tree to unstack")
    stacked = tree["layers"]["layer"]
    n = {x.shape[0] for x in jax.tree.leaves(stacked)}
    if len(n) != 1:
        raise ValueError(f"stacked layer leaves disagree on the layer count: {sorted(n)}")
    out = {k: v for k, v in tree.items() if k != "layers"}
    for i in range(n.pop()):
        out[f"layer_{i}"] = jax.tree.map(lambda x, i=i: _index(x, i), stacked)
    return out


def to_layout(tree: Any, scan: bool) -> Any:
    """``tree`` with every params-like dict in it in the scan (``scan=True``) or loop form; others unchanged."""
    if isinstance(tree, Mapping):
        tree = {k: to_layout(v, scan) for k, v in tree.items()}
        if scan and "layer_0" in tree:
            return stack(tree)
        if not scan and is_stacked(tree):
            return unstack(tree)
        return tree
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):  # NamedTuple (optax states)
        return type(tree)(*(to_layout(v, scan) for v in tree))
    if isinstance(tree, (list, tuple)):
        return type(tree)(to_layout(v, scan) for v in tree)
    return tree
