"""Conversion between transformers' ``XLMRobertaForMaskedLM`` state dicts and our params.

Both directions go through one name map (``_encoder_mapping``), so import (``from_hf_state_dict``) and
export (``to_hf_state_dict``) cannot drift apart. The prompt pool has no transformers counterpart: on
import it keeps its fresh initial values; on export it is returned separately. The vocabulary rows (word embeddings, decoder bias) are padded with
zeros to ``padded_vocab_size`` on import and cut back to ``vocab_size`` on export.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from xlmp_jax.model import layer_stack
from xlmp_jax.model.model_config import ModelConfig
from xlmp_jax.model.xlmp import param_shapes

Array = np.ndarray
# (our path, transformers key, to_ours(hf_array, cfg), to_hf(our_array, cfg))
Rule = tuple[tuple[str, ...], str, Callable[[Array, ModelConfig], Array], Callable[[Array, ModelConfig], Array]]


def _same(x: Array, cfg: ModelConfig) -> Array:
    return x


def _transpose(x: Array, cfg: ModelConfig) -> Array:
    return x.T


def _vocab_in(x: Array, cfg: ModelConfig) -> Array:  # [V, ...] -> [padded V, ...], zero rows appended
    if x.shape[0] != cfg.vocab_size:
        return x  # left to the shape check, which names both sizes
    return np.pad(x, [(0, cfg.padded_vocab_size - cfg.vocab_size)] + [(0, 0)] * (x.ndim - 1))


def _vocab_out(x: Array, cfg: ModelConfig) -> Array:  # the padding rows stripped: transformers has V
    return x[: cfg.vocab_size]


def _qkv_in(x: Array, cfg: ModelConfig) -> Array:  # torch [H*Dh, D] -> ours [D, H, Dh]
    return x.T.reshape(cfg.hidden_size, cfg.num_heads, cfg.head_dim)


def _qkv_out(x: Array, cfg: ModelConfig) -> Array:
    return x.reshape(cfg.hidden_size, cfg.hidden_size).T


def _heads_bias_in(x: Array, cfg: ModelConfig) -> Array:
    return x.reshape(cfg.num_heads, cfg.head_dim)


def _heads_bias_out(x: Array, cfg: ModelConfig) -> Array:
    return x.reshape(-1)


def _attn_out_in(x: Array, cfg: ModelConfig) -> Array:  # torch [D, H*Dh] -> ours [H, Dh, D]
    return x.T.reshape(cfg.num_heads, cfg.head_dim, cfg.hidden_size)


def _attn_out_out(x: Array, cfg: ModelConfig) -> Array:
    return x.reshape(cfg.hidden_size, cfg.hidden_size).T


def _layer_norm(ours: tuple[str, ...], hf: str) -> Iterator[Rule]:
    yield (*ours, "scale"), f"{hf}.weight", _same, _same
    yield (*ours, "bias"), f"{hf}.bias", _same, _same


def _dense(ours: tuple[str, ...], hf: str) -> Iterator[Rule]:
    yield (*ours, "kernel"), f"{hf}.weight", _transpose, _transpose
    yield (*ours, "bias"), f"{hf}.bias", _same, _same


def _encoder_mapping(cfg: ModelConfig) -> list[Rule]:
    emb = "roberta.embeddings"
    rules: list[Rule] = [
        (("embeddings", "word_embeddings"), f"{emb}.word_embeddings.weight", _vocab_in, _vocab_out),
        (("embeddings", "position_embeddings"), f"{emb}.position_embeddings.weight", _same, _same),
        (("embeddings", "token_type_embeddings"), f"{emb}.token_type_embeddings.weight", _same, _same),
        *_layer_norm(("embeddings", "layer_norm"), f"{emb}.LayerNorm"),
        *_dense(("lm_head", "dense"), "lm_head.dense"),
        *_layer_norm(("lm_head", "layer_norm"), "lm_head.layer_norm"),
        (("lm_head", "bias"), "lm_head.bias", _vocab_in, _vocab_out),
    ]
    for i in range(cfg.num_layers):
        ours, hf = f"layer_{i}", f"roberta.encoder.layer.{i}"
        for name in ("query", "key", "value"):
            rules.append(((ours, "attention", name, "kernel"), f"{hf}.attention.self.{name}.weight", _qkv_in, _qkv_out))
            rules.append(
                ((ours, "attention", name, "bias"), f"{hf}.attention.self.{name}.bias", _heads_bias_in, _heads_bias_out)
            )
        rules.append(
            ((ours, "attention", "out", "kernel"), f"{hf}.attention.output.dense.weight", _attn_out_in, _attn_out_out)
        )
        rules.append(((ours, "attention", "out", "bias"), f"{hf}.attention.output.dense.bias", _same, _same))
        rules += _layer_norm((ours, "attention_layer_norm"), f"{hf}.attention.output.LayerNorm")
        rules += _dense((ours, "intermediate"), f"{hf}.intermediate.dense")
        rules += _dense((ours, "output"), f"{hf}.output.dense")
        rules += _layer_norm((ours, "output_layer_norm"), f"{hf}.output.LayerNorm")
    return rules


# transformers keys that are tied copies of others (not separate parameters).
TIED_HF_KEYS = {
    "lm_head.decoder.weight": "roberta.embeddings.word_embeddings.weight",
    "lm_head.decoder.bias": "lm_head.bias",
}


def _get(tree: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def _set(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def from_hf_state_dict(state_dict: Mapping[str, Any], config: ModelConfig, pool_params: Mapping | None = None) -> dict:
    """Our params from a transformers ``XLMRobertaForMaskedLM`` state dict (torch tensors or arrays).

    ``pool_params`` (e.g. a fresh initialisation) is inserted as the pool when ``config.pool`` is set.
    Raises a ValueError naming any missing key or shape mismatch.
    """
    arrays = {k: np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v) for k, v in state_dict.items()}
    expected = _shapes_of(config)
    params: dict[str, Any] = {}
    for ours, hf, to_ours, _ in _encoder_mapping(config):
        if hf not in arrays:
            raise ValueError(f"transformers state dict has no {hf!r}: not an XLMRobertaForMaskedLM of this config?")
        want = tuple(_get(expected, ours).shape)
        try:
            value = to_ours(arrays[hf], config).astype(np.float32)
        except ValueError:  # a reshape that cannot fit: the tensor is of another size
            value = None
        if value is None or value.shape != want:
            raise ValueError(
                f"shape mismatch for {hf!r}: transformers gives {tuple(arrays[hf].shape)}, "
                f"which does not fit {'/'.join(ours)} {want} of this config"
            )
        _set(params, ours, value)
    if config.pool is not None:
        if pool_params is None:
            raise ValueError("config has a prompt pool: pass pool_params (e.g. a fresh initialisation)")
        params["pool"] = {k: np.asarray(v) for k, v in pool_params.items()}
    return layer_stack.to_layout(params, config.scan_layers)


def to_hf_state_dict(params: Mapping[str, Any], config: ModelConfig) -> dict[str, np.ndarray]:
    """A transformers ``XLMRobertaForMaskedLM`` state dict (NumPy, fp32) from our params; pool excluded.
    Scanned layers (``model.scan_layers``) are unstacked first (``xlmp_jax.model.layer_stack``)."""
    params = layer_stack.to_layout(params, scan=False)
    out = {
        hf: np.ascontiguousarray(to_hf(np.asarray(_get(params, ours), np.float32), config))
        for ours, hf, _, to_hf in _encoder_mapping(config)
    }
    for tied, source in TIED_HF_KEYS.items():
        out[tied] = out[source]
    return out


def _shapes_of(config: ModelConfig) -> dict:
    return param_shapes(dataclasses.replace(config, scan_layers=False))  # the mapping is per loop layer
