"""A saved train state against the state it is restored into: PRNG keys as key data, the shape check, and
the vocabulary padding of checkpoints written before it.

Orbax stores plain arrays, so typed PRNG keys are saved as their raw key data (``to_storable``) and wrapped
again on restore (``from_storable``). Before anything is read, every saved shape is compared with the
target's: a difference is an ``IncompatibleCheckpointError`` naming the path and the parameter (parameters
first: that is the mismatch a user can act on), except the vocabulary rows of a checkpoint written before
``model.vocab_multiple`` padding, which are read at their saved size and zero-padded (``plan_restore``).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import jax
import orbax.checkpoint as ocp

from xlmp_jax.model import layer_stack

log = logging.getLogger(__name__)


class IncompatibleCheckpointError(ValueError):
    """The checkpoint was written by a model of other shapes; the message names the path and parameter."""


def _is_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def to_storable(state: Any) -> Any:
    """Typed PRNG keys -> raw uint32 key data (other leaves unchanged)."""
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, state)


def from_storable(restored: Any, like: Any) -> Any:
    """Undoes ``to_storable`` using ``like`` (a state of the same structure) to find the key leaves."""
    return jax.tree.map(
        lambda r, t: jax.random.wrap_key_data(r, impl=jax.random.key_impl(t)) if _is_key(t) else r, restored, like
    )


def _abstract(state: Any) -> Any:
    """ShapeDtypeStructs carrying each leaf's sharding: the restore target (the mesh may differ from the save's)."""

    def leaf(x):
        if isinstance(x, jax.ShapeDtypeStruct):
            return x
        if isinstance(x, jax.Array):
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
        return x

    return jax.tree.map(leaf, to_storable(state))


def _path_str(path: tuple) -> str:
    parts = []
    for k in path:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return "/".join(parts)


def _shapes(tree: Any) -> dict[str, tuple]:
    leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: x is None)[0]
    return {_path_str(p): tuple(x.shape) for p, x in leaves if x is not None and hasattr(x, "shape")}


def check_compatible(saved_tree: Any, target_state: Any, where: str) -> None:
    """Raises IncompatibleCheckpointError naming the first parameter whose shape (or presence) differs."""
    saved = _shapes(saved_tree)
    target = _shapes(ocp.tree.serialize_tree(_abstract(target_state), keep_empty_nodes=True))
    # Parameters first: that is the mismatch a user can act on (another model size / pool setting).
    for prefix in ("params/", ""):
        for name in sorted(set(saved) | set(target)):
            if not name.startswith(prefix):
                continue
            if name not in saved:
                raise IncompatibleCheckpointError(f"checkpoint {where} lacks {name!r} (shape {target[name]})")
            if name not in target:
                raise IncompatibleCheckpointError(
                    f"checkpoint {where} has {name!r} (shape {saved[name]}), which this model does not"
                )
            if saved[name] != target[name]:
                raise IncompatibleCheckpointError(
                    f"checkpoint {where} is incompatible with this config: {name!r} has shape {saved[name]} "
                    f"there but {target[name]} here"
                )


# Checkpoints written before vocabulary padding: their vocabulary leaves have vocab_size rows, the model's
# padded_vocab_size. They are read at the saved size (replicated) and zero-padded into the target sharding:
# the padding rows of the params and of both Adam moments are zeros, as in a fresh padded state.
_VOCAB_LEAVES = ("embeddings/word_embeddings", "lm_head/bias")


def _unpadded_vocab(saved: dict[str, tuple], target: dict[str, tuple]) -> dict[str, tuple]:
    """name -> saved shape of the vocabulary leaves saved with fewer rows than the target has (else equal)."""
    out = {}
    for name, shape in saved.items():
        want = target.get(name)
        if want is None or want == shape or not name.endswith(_VOCAB_LEAVES):
            continue
        if len(shape) == len(want) and shape[1:] == want[1:] and shape[0] < want[0]:
            out[name] = shape
    return out


def _with_shapes(abstract: Any, shapes: dict[str, tuple]) -> Any:
    """``abstract`` with the named leaves given those shapes, replicated over their mesh."""

    def leaf(path, x):
        name = _path_str(path)
        if name not in shapes:
            return x
        sharding = jax.sharding.NamedSharding(x.sharding.mesh, jax.sharding.PartitionSpec())
        return jax.ShapeDtypeStruct(shapes[name], x.dtype, sharding=sharding)

    return jax.tree_util.tree_map_with_path(leaf, abstract)


def _pad_rows(restored: Any, target: Any, names: dict[str, tuple]) -> Any:
    """The named leaves of ``restored`` zero-padded to ``target``'s shapes and placed in its shardings."""

    def leaf(path, x, want):
        if _path_str(path) not in names:
            return x
        widths = [(0, want.shape[0] - x.shape[0])] + [(0, 0)] * (x.ndim - 1)
        return jax.device_put(jax.numpy.pad(x, widths), want.sharding)

    return jax.tree_util.tree_map_with_path(leaf, restored, target)


@dataclasses.dataclass(frozen=True)
class RestorePlan:
    """How to read a saved state into ``like``: what Orbax reads into, then the padding that follows."""

    target: Any  # like's abstract twin: storable leaves with their shardings
    read_as: Any  # ``target`` with the unpadded vocabulary leaves at their saved shapes, replicated, and its layers
    # in the saved form (a loop or a scan)
    unpadded: dict[str, tuple]  # name -> saved shape of the vocabulary leaves to zero-pad
    relayout: bool = False  # the checkpoint's layers are in the other form (model.scan_layers): convert them

    def finish(self, restored: Any, like: Any) -> Any:
        """The state read with ``read_as``, in ``like``'s layer form, padded and placed in its shardings, PRNG
        keys typed again."""
        if self.relayout:
            restored = _in_layer_form(restored, _is_scanned(_shapes(self.target)))
            restored = jax.tree.map(lambda x, t: jax.device_put(x, t.sharding), restored, self._unpadded_target())
        return from_storable(_pad_rows(restored, self.target, self.unpadded), like)

    def _unpadded_target(self) -> Any:
        return _with_shapes(self.target, self.unpadded)


def _is_scanned(shapes: dict[str, tuple]) -> bool:
    return any(name.startswith("params/layers/layer/") for name in shapes)


def _in_layer_form(state: Any, scan: bool) -> Any:
    """``state`` with its params and every params-shaped part of its optimizer state as a layer loop or a scan."""
    return state.replace(
        params=layer_stack.to_layout(state.params, scan), opt_state=layer_stack.to_layout(state.opt_state, scan)
    )


def plan_restore(saved_tree: Any, like: Any, where: str) -> RestorePlan:
    """Checks ``saved_tree`` (the saved item's metadata) against ``like``; raises IncompatibleCheckpointError."""
    target = _abstract(like)
    unpadded = _unpadded_vocab(_shapes(saved_tree), _shapes(target))
    if unpadded:
        log.warning("checkpoint %s was written before vocabulary padding: padding %s", where, sorted(unpadded))
    read_as = _with_shapes(target, unpadded)
    saved_scan = _is_scanned(_shapes(saved_tree))
    relayout = saved_scan != _is_scanned(_shapes(target))
    if relayout:  # a checkpoint of the other model.scan_layers: read in its form, converted in finish()
        form = {True: "a scan", False: "a loop"}
        log.warning("checkpoint %s holds the encoder layers as %s: converting on restore", where, form[saved_scan])
        read_as = _in_layer_form(read_as, saved_scan)
    check_compatible(saved_tree, read_as, where)
    return RestorePlan(target, read_as, unpadded, relayout)
