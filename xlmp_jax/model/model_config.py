"""The encoder's hyper-parameters (``ModelConfig``), their up-front checks, and the named sizes.

Its own module because both the layers (``xlmp_jax.model.layers``) and the model (``xlmp_jax.model``) read it,
and a config loads without building anything.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from xlmp_jax.model.prompt_pool import PoolConfig

REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}
ATTENTION_IMPLS = ("auto", "fused", "explicit", "cudnn")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Encoder + pool hyper-parameters. Defaults are XLM-R base's (transformers' config.json)."""

    vocab_size: int = 250002
    # The embedding table, decoder and its bias hold ``padded_vocab_size`` rows: vocab_size rounded up to
    # a multiple of this, so a tensor-parallel axis can split them (250,002 divides by neither 4 nor 8).
    # Fixed by the config, not the mesh, so a checkpoint moves between meshes. Padded logits are masked.
    vocab_multiple: int = 128
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 514
    type_vocab_size: int = 1
    pad_token_id: int = 1
    layer_norm_eps: float = 1e-5
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    initializer_range: float = 0.02
    dtype: str = "float32"  # compute dtype ("bfloat16" on TPU/GPU)
    param_dtype: str = "float32"  # master weights
    remat: str = "none"  # one of REMAT_POLICIES
    # True: the encoder layers are one nn.scan over a stacked layer (params under "layers/layer", each with
    # a leading [num_layers] axis): one layer's program, so compile time no longer grows with depth.
    # False: a Python loop of "layer_0".."layer_{N-1}" (checkpoints and exports use this form;
    # xlmp_jax.model.layer_stack converts both ways). Same numbers; only the dropout draws differ.
    scan_layers: bool = False
    # auto: jax.nn.dot_product_attention (XLA) unless attention dropout is active, then an explicit
    # softmax with dropout; cudnn: cuDNN's fused kernel (GPU, bf16/fp16, no attention dropout, valid
    # keys first in each row: the data pipeline's right padding). See SelfAttention.
    attention: str = "auto"
    pool: PoolConfig | None = dataclasses.field(default_factory=PoolConfig)  # None = XLM-R baseline

    def __post_init__(self):
        for name in (
            "vocab_size",
            "vocab_multiple",
            "hidden_size",
            "num_layers",
            "num_heads",
            "intermediate_size",
            "max_position_embeddings",
            "type_vocab_size",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"model.{name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"model.hidden_size={self.hidden_size} is not divisible by model.num_heads={self.num_heads}"
            )
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"model.pad_token_id={self.pad_token_id} is outside the vocabulary")
        if self.max_position_embeddings <= self.pad_token_id + 1:
            raise ValueError(
                f"model.max_position_embeddings={self.max_position_embeddings} leaves no positions "
                f"after the padding offset (pad_token_id={self.pad_token_id})"
            )
        if self.remat not in REMAT_POLICIES:
            raise ValueError(f"model.remat={self.remat!r} is not one of {tuple(REMAT_POLICIES)}")
        if self.attention not in ATTENTION_IMPLS:
            raise ValueError(f"model.attention={self.attention!r} is not one of {ATTENTION_IMPLS}")
        if not isinstance(self.scan_layers, bool):
            raise ValueError(f"model.scan_layers must be True or False, got {self.scan_layers!r}")
        for name in ("hidden_dropout", "attention_dropout"):
            rate = getattr(self, name)
            if not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
                raise ValueError(f"model.{name}={rate!r} must be a probability in [0, 1)")
        if self.attention == "cudnn" and self.attention_dropout > 0:
            raise ValueError(
                f"model.attention='cudnn' has no attention dropout: set model.attention_dropout=0 "
                f"(got {self.attention_dropout})"
            )
        for name in ("dtype", "param_dtype"):
            try:
                jnp.dtype(getattr(self, name))
            except TypeError:
                raise ValueError(f"model.{name}={getattr(self, name)!r} is not a dtype") from None

    @property
    def max_length(self) -> int:
        """Longest input the position table holds (514 - 2 = 512 for XLM-R)."""
        return self.max_position_embeddings - self.pad_token_id - 1

    @property
    def padded_vocab_size(self) -> int:
        """Rows of the embedding table / decoder: ``vocab_size`` rounded up to ``vocab_multiple``."""
        return -(-self.vocab_size // self.vocab_multiple) * self.vocab_multiple

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ModelConfig:
        """Builds a config from a (ConfigDict-like) mapping; unknown fields are a clear error.

        The pool block is read as a saved one (``PoolConfig.from_saved``): a run config saved before the pool's
        training options existed keeps their old values. A config built by ``configs/`` holds every field.
        """
        values = dict(values)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown model config field(s): {', '.join('model.' + u for u in unknown)}")
        pool = values.pop("pool", None)
        if pool is not None and not isinstance(pool, PoolConfig):
            pool = dict(pool)
            enabled = pool.pop("enabled", True)
            pool_known = {f.name for f in dataclasses.fields(PoolConfig)}
            bad = sorted(set(pool) - pool_known)
            if bad:
                raise ValueError(f"unknown pool config field(s): {', '.join('model.pool.' + b for b in bad)}")
            pool = PoolConfig.from_saved(pool) if enabled else None
        return cls(pool=pool, **values)

    @classmethod
    def preset(cls, size: str, *, pool: bool | PoolConfig | None = True, **overrides: Any) -> ModelConfig:
        """A named architecture size; ``pool`` True (default pool), a PoolConfig, or False/None (baseline)."""
        if size not in SIZES:
            raise ValueError(f"unknown model size {size!r}; expected one of {tuple(SIZES)}")
        if pool is True:
            pool = PoolConfig()
        return cls(**{**SIZES[size], "pool": pool or None, **overrides})


# The fields a named size sets; every other field keeps ModelConfig's default.
_SIZE_FIELDS = ("hidden_size", "num_layers", "num_heads", "intermediate_size", "vocab_size", "max_position_embeddings")
# Architecture sizes. tiny is ours (fast tests/demo); base is ModelConfig's own defaults (XLM-R base's, written
# once there); large is XLM-R's.
SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(
        hidden_size=64, num_layers=2, num_heads=4, intermediate_size=256, vocab_size=8002, max_position_embeddings=130
    ),
    "base": {name: getattr(ModelConfig, name) for name in _SIZE_FIELDS},
    "large": dict(
        hidden_size=1024,
        num_layers=24,
        num_heads=16,
        intermediate_size=4096,
        vocab_size=250002,
        max_position_embeddings=514,
    ),
}
