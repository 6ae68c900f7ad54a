"""XLM-P: the XLM-R encoder (exactly as transformers' ``XLMRobertaForMaskedLM``) with a prompt pool.

Layout of one forward pass:
  embeddings = LayerNorm(word[ids] + position[positions] + token_type[type_ids]), dropout
  [pool]       prompts = PromptPool(embeddings, mask)            -> [B, Lp, D]
               sequence = concat(prompts, embeddings)             -> [B, Lp + T, D]
  encoder    = N post-LN layers: x = LN(x + Attn(x)); x = LN(x + FFN(x))  (GELU, erf form)
  [pool]       drop the Lp prompt positions again                 -> [B, T, D]
  MLM head   = LN(GELU(dense(h))) @ word_embeddings.T + bias       (decoder tied to the embeddings)

Vocabulary padding: the word embeddings and the decoder bias have ``padded_vocab_size`` rows
(``vocab_size`` rounded up to ``vocab_multiple``) so that the ``vocab`` axis splits evenly over a
tensor-parallel mesh axis; the padding rows start at zero, are never looked up (ids are checked
against ``vocab_size``) and their logits are masked to the lowest value (``vocab_mask``).
Conversions to and from transformers strip and re-add them (``hf.names``, ``pad_vocab``).

Prompt positions: the retrieved prompt vectors are prepended *after* the embedding LayerNorm and get
no position or token-type embedding (a prompt is a set of learned vectors, not text). The input's own
tokens keep exactly the position ids they would have without the pool (XLM-R's padding offset:
padding_idx + 1, padding_idx + 2, ...; pads get padding_idx), so a transformers checkpoint imports
unchanged and the pool can be switched on for continued pre-training. Prompt positions are always
attended to (mask 1) and are dropped before the head, so heads and losses see only the input's tokens.

The model knows nothing of meshes: parameters and main activations carry logical axis names
(``vocab``, ``embed``, ``mlp``, ``heads``, ``kv``, ``prompts``, ``batch``, ``length``...), which the
trainer maps onto a device mesh with rules.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from xlmp_jax.pool import PoolConfig, PromptPool

REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}
ATTENTION_IMPLS = ("auto", "fused", "explicit", "cudnn")
# (module, param) of the parameters with one row per vocabulary entry: padded to ``padded_vocab_size``.
VOCAB_PARAMS = (("embeddings", "word_embeddings"), ("lm_head", "bias"))

# Architecture sizes. tiny is ours (fast tests/demo); base and large are XLM-R's.
SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(
        hidden_size=64, num_layers=2, num_heads=4, intermediate_size=256, vocab_size=8002, max_position_embeddings=130
    ),
    "base": dict(
        hidden_size=768,
        num_layers=12,
        num_heads=12,
        intermediate_size=3072,
        vocab_size=250002,
        max_position_embeddings=514,
    ),
    "large": dict(
        hidden_size=1024,
        num_layers=24,
        num_heads=16,
        intermediate_size=4096,
        vocab_size=250002,
        max_position_embeddings=514,
    ),
}


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
        """Builds a config from a (ConfigDict-like) mapping; unknown fields are a clear error."""
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
            pool = PoolConfig(**pool) if enabled else None
        return cls(pool=pool, **values)

    @classmethod
    def preset(cls, size: str, *, pool: bool | PoolConfig | None = True, **overrides: Any) -> ModelConfig:
        """A named architecture size; ``pool`` True (default pool), a PoolConfig, or False/None (baseline)."""
        if size not in SIZES:
            raise ValueError(f"unknown model size {size!r}; expected one of {tuple(SIZES)}")
        if pool is True:
            pool = PoolConfig()
        return cls(**{**SIZES[size], "pool": pool or None, **overrides})


def xlmr_positions(input_ids: jax.Array, pad_token_id: int) -> jax.Array:
    """XLM-R's position ids: pad_token_id + 1, + 2, ... over real tokens; pads get pad_token_id."""
    not_pad = (input_ids != pad_token_id).astype(jnp.int32)
    return jnp.cumsum(not_pad, axis=1) * not_pad + pad_token_id


def check_inputs(config: ModelConfig, input_ids: Any, positions: Any = None) -> None:
    """Host-side validation with messages naming the bad value.

    Shapes are always checked; values only when they are concrete (not inside ``jax.jit``), since
    XLA would silently clamp an out-of-range gather.
    """
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must be [batch, length], got shape {tuple(input_ids.shape)}")
    length = input_ids.shape[1]
    if positions is None and length > config.max_length:
        raise ValueError(
            f"sequence length {length} exceeds the position table: model.max_position_embeddings="
            f"{config.max_position_embeddings} holds at most {config.max_length} tokens"
        )
    if isinstance(input_ids, jax.core.Tracer):
        return
    ids = np.asarray(input_ids)
    if ids.size and (ids.min() < 0 or ids.max() >= config.vocab_size):
        bad = ids[(ids < 0) | (ids >= config.vocab_size)].ravel()[0]
        raise ValueError(f"token id {int(bad)} is outside the vocabulary [0, {config.vocab_size})")
    if positions is not None and not isinstance(positions, jax.core.Tracer):
        pos = np.asarray(positions)
        if pos.size and (pos.min() < 0 or pos.max() >= config.max_position_embeddings):
            bad = pos[(pos < 0) | (pos >= config.max_position_embeddings)].ravel()[0]
            raise ValueError(
                f"position id {int(bad)} is outside the position table "
                f"[0, model.max_position_embeddings={config.max_position_embeddings})"
            )


@jax.custom_vjp
def add_bias(x: jax.Array, bias: jax.Array) -> jax.Array:
    """``x + bias`` (bias over the last axis) whose bias gradient is a matrix-vector product.

    The gradient of a broadcast bias is a sum over all leading axes. XLA:CPU lowers that reduction
    (through YNNPACK) about 50x slower than the same sum written as ``ones @ g``: for the
    250k-vocabulary head bias, 2.08 s vs 0.036 s (bench/cpu_ops.py), and a base step with logits
    everywhere went from 23.7 to 20.4 s (bench/tuning_ab.py). GPUs and TPUs run either form at
    memory speed.
    """
    return x + bias.astype(x.dtype)


def _add_bias_fwd(x, bias):
    return x + bias.astype(x.dtype), bias  # the (small) bias only to know its dtype in the backward pass


def _add_bias_bwd(bias, g):
    rows = g.reshape(-1, g.shape[-1])
    ones = jnp.ones((rows.shape[0],), rows.dtype)
    bias_grad = jnp.einsum("n,nv->v", ones, rows, preferred_element_type=jnp.float32)
    return g, bias_grad.astype(bias.dtype)


add_bias.defvjp(_add_bias_fwd, _add_bias_bwd)


def _dense_init(config: ModelConfig, axes: tuple[str | None, ...]):
    return nn.with_logical_partitioning(nn.initializers.normal(config.initializer_range), axes)


def _zeros(axes: tuple[str | None, ...]):
    return nn.with_logical_partitioning(nn.initializers.zeros_init(), axes)


def _vocab_rows_init(config: ModelConfig, init: Any, axes: tuple[str | None, ...]):
    """``init`` for the ``vocab_size`` real rows, zeros for the padding rows below them.

    The real rows get exactly the values of an unpadded table from the same key, and the padding rows
    hold what an import adds (zeros), so a fresh model and an imported one agree on them.
    """

    def padded(key, shape, dtype=jnp.float32):
        real = init(key, (config.vocab_size, *shape[1:]), dtype)
        return jnp.pad(real, [(0, shape[0] - config.vocab_size)] + [(0, 0)] * (len(shape) - 1))

    return nn.with_logical_partitioning(padded, axes)


def vocab_mask(config: ModelConfig, logits: jax.Array) -> jax.Array:
    """``logits`` [..., padded V] with the padding columns at the dtype's lowest value.

    Every consumer (loss, accuracy, argmax, softmax) then sees zero probability there, and the select
    passes no gradient to the padding rows. Finite, not -inf: ``0 * lowest`` is 0, ``0 * -inf`` is NaN.
    An elementwise compare with an iota, so a vocabulary-sharded array stays sharded.
    """
    if logits.shape[-1] == config.vocab_size:
        return logits
    column = jax.lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1)
    return jnp.where(column < config.vocab_size, logits, jnp.finfo(logits.dtype).min)


def pad_vocab(config: ModelConfig, params: Mapping[str, Any]) -> dict:
    """``params`` with the vocabulary rows (word embeddings, decoder bias) zero-padded to ``padded_vocab_size``.

    For trees with ``vocab_size`` rows (a transformers import, a checkpoint written before padding);
    already padded trees pass unchanged. Works on NumPy and JAX arrays; other leaves are untouched.
    """
    out = dict(params)
    for outer, name in VOCAB_PARAMS:
        if outer not in out or name not in out[outer]:
            continue
        value = out[outer][name]
        rows = value.shape[0]
        if rows == config.padded_vocab_size:
            continue
        if rows != config.vocab_size:
            raise ValueError(
                f"param {outer}/{name} has {rows} rows: neither model.vocab_size={config.vocab_size} nor "
                f"its padded size {config.padded_vocab_size} (model.vocab_multiple={config.vocab_multiple})"
            )
        xp = np if isinstance(value, np.ndarray) else jnp
        widths = [(0, config.padded_vocab_size - rows)] + [(0, 0)] * (value.ndim - 1)
        out[outer] = {**out[outer], name: xp.pad(value, widths)}
    return out


def _layer_norm(config: ModelConfig, name: str) -> nn.LayerNorm:
    return nn.LayerNorm(
        epsilon=config.layer_norm_eps,
        dtype=jnp.float32,  # statistics in fp32 whatever the compute dtype
        param_dtype=jnp.dtype(config.param_dtype),
        scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("embed",)),
        bias_init=_zeros(("embed",)),
        name=name,
    )


class Dropout(nn.Module):
    """Inverted dropout that draws 16 random bits per element, two from each 32-bit word.

    ``nn.Dropout`` draws a 32-bit uniform per element; on CPU the threefry hash behind the 40M draws
    of a base step (B 8 x 128) takes 0.76 s, the 16-bit draws 0.42 s (bench/cpu_ops.py). The drop
    probability is ``round(rate * 2**16) / 2**16`` (0.100006 for 0.1) and the kept values are scaled
    by its complement, so the expectation is exact. Uses the ``dropout`` rng collection, as
    ``nn.Dropout`` does.
    """

    rate: float

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        if deterministic or self.rate == 0.0:
            return x
        if not 0.0 < self.rate < 1.0:
            raise ValueError(f"dropout rate must be in [0, 1), got {self.rate}")
        threshold = min(round(self.rate * 2**16), 2**16 - 1)
        key = self.make_rng("dropout")
        if x.shape[-1] % 2:  # odd last axis: plain 32-bit draws
            keep = jax.random.bits(key, x.shape, jnp.uint32) >= jnp.uint32(threshold << 16)
        else:  # [..., n/2] words -> [..., n/2, 2] halves -> [..., n]; the split stays inside the last axis
            words = jax.random.bits(key, (*x.shape[:-1], x.shape[-1] // 2), jnp.uint32)
            keep = jax.lax.bitcast_convert_type(words, jnp.uint16).reshape(x.shape) >= jnp.uint16(threshold)
        scale = 1.0 / (1.0 - threshold / 2**16)
        return jnp.where(keep, x * jnp.asarray(scale, x.dtype), jnp.zeros((), x.dtype))


class Embeddings(nn.Module):
    """Word + position + token-type embeddings, LayerNorm and dropout (XLM-R's embedding block)."""

    config: ModelConfig

    def setup(self):
        cfg = self.config
        pdt = jnp.dtype(cfg.param_dtype)
        self.word_embeddings = self.param(
            "word_embeddings",
            _vocab_rows_init(cfg, nn.initializers.normal(cfg.initializer_range), ("vocab", "embed")),
            (cfg.padded_vocab_size, cfg.hidden_size),
            pdt,
        )
        self.position_embeddings = self.param(
            "position_embeddings",
            _dense_init(cfg, (None, "embed")),
            (cfg.max_position_embeddings, cfg.hidden_size),
            pdt,
        )
        self.token_type_embeddings = self.param(
            "token_type_embeddings",
            _dense_init(cfg, (None, "embed")),
            (cfg.type_vocab_size, cfg.hidden_size),
            pdt,
        )
        self.layer_norm = _layer_norm(cfg, "layer_norm")
        self.dropout = Dropout(cfg.hidden_dropout)

    def __call__(self, input_ids, positions, token_type_ids, deterministic: bool) -> jax.Array:
        dtype = jnp.dtype(self.config.dtype)
        x = (
            jnp.take(self.word_embeddings, input_ids, axis=0)
            + jnp.take(self.position_embeddings, positions, axis=0)
            + jnp.take(self.token_type_embeddings, token_type_ids, axis=0)
        )
        x = self.layer_norm(x).astype(dtype)
        x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
        return self.dropout(x, deterministic=deterministic)

    def attend(self, hidden: jax.Array) -> jax.Array:
        """The tied decoder: hidden [..., D] @ word_embeddings.T -> [..., padded V] (padding unmasked)."""
        table = self.word_embeddings.astype(hidden.dtype)
        return jnp.einsum("...d,vd->...v", hidden, table)


class HeadsProjection(nn.Module):
    """x [B, L, D] -> [B, L, H, Dh]: the query/key/value projection, kernel [D, H, Dh] + bias [H, Dh].

    Written as a param + einsum rather than ``nn.DenseGeneral``: flax's DenseGeneral re-runs the kernel
    init on a flattened 2-D shape for its shape check, which breaks logical constraints under a mesh.
    """

    config: ModelConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        dtype, pdt = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        shape = (cfg.hidden_size, cfg.num_heads, cfg.head_dim)
        kernel = self.param("kernel", _dense_init(cfg, ("embed", "heads", "kv")), shape, pdt)
        bias = self.param("bias", _zeros(("heads", "kv")), shape[1:], pdt)
        return jnp.einsum("bld,dhk->blhk", x.astype(dtype), kernel.astype(dtype)) + bias.astype(dtype)


class HeadsOutput(nn.Module):
    """[B, L, H, Dh] -> [B, L, D]: the attention output projection, kernel [H, Dh, D] + bias [D]."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        dtype, pdt = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        shape = (cfg.num_heads, cfg.head_dim, cfg.hidden_size)
        kernel = self.param("kernel", _dense_init(cfg, ("heads", "kv", "embed")), shape, pdt)
        bias = self.param("bias", _zeros(("embed",)), (cfg.hidden_size,), pdt)
        return jnp.einsum("blhk,hkd->bld", x.astype(dtype), kernel.astype(dtype)) + bias.astype(dtype)


class SelfAttention(nn.Module):
    """Multi-head self-attention with a key padding mask; output projection included."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array, deterministic: bool) -> jax.Array:
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)

        q, k, v = (HeadsProjection(cfg, name=n)(x) for n in ("query", "key", "value"))  # [B, L, H, Dh]
        q = nn.with_logical_constraint(q, ("batch", "length", "heads", "kv"))
        k = nn.with_logical_constraint(k, ("batch", "length", "heads", "kv"))
        v = nn.with_logical_constraint(v, ("batch", "length", "heads", "kv"))
        key_mask = mask[:, None, None, :].astype(jnp.bool_)  # [B, 1, 1, L]: every query sees real keys
        dropout_active = cfg.attention_dropout > 0 and not deterministic
        use_fused = cfg.attention == "fused" or (cfg.attention == "auto" and not dropout_active)
        if cfg.attention == "cudnn":
            # cuDNN takes padding as per-row key counts, not a [B, 1, 1, L] mask: valid keys must come
            # first (prompts, then tokens, then right padding), as the data pipeline lays rows out.
            lengths = jnp.sum(mask.astype(jnp.int32), axis=1)
            out = jax.nn.dot_product_attention(q, k, v, key_value_seq_lengths=lengths, implementation="cudnn")
        elif use_fused:
            out = jax.nn.dot_product_attention(q, k, v, mask=key_mask)
        else:
            logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(cfg.head_dim).astype(dtype)
            big_neg = jnp.finfo(jnp.float32).min
            logits = jnp.where(key_mask, logits.astype(jnp.float32), big_neg)
            probs = jax.nn.softmax(logits, axis=-1).astype(dtype)
            probs = Dropout(cfg.attention_dropout)(probs, deterministic=deterministic)
            out = jnp.einsum("bhqk,bkhd->bqhd", probs, v)
        out = nn.with_logical_constraint(out, ("batch", "length", "heads", "kv"))
        return HeadsOutput(cfg, name="out")(out)


class EncoderLayer(nn.Module):
    """One post-LN Transformer layer, as BERT/RoBERTa/XLM-R."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array, deterministic: bool) -> jax.Array:
        cfg = self.config
        dtype, pdt = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        dropout = Dropout(cfg.hidden_dropout)
        attn = SelfAttention(cfg, name="attention")(x, mask, deterministic)
        x = _layer_norm(cfg, "attention_layer_norm")(x + dropout(attn, deterministic=deterministic))
        x = nn.with_logical_constraint(x.astype(dtype), ("batch", "length", "embed"))
        h = nn.Dense(
            cfg.intermediate_size,
            kernel_init=_dense_init(cfg, ("embed", "mlp")),
            bias_init=_zeros(("mlp",)),
            dtype=dtype,
            param_dtype=pdt,
            name="intermediate",
        )(x)
        h = nn.with_logical_constraint(jax.nn.gelu(h, approximate=False), ("batch", "length", "mlp"))
        h = nn.Dense(
            cfg.hidden_size,
            kernel_init=_dense_init(cfg, ("mlp", "embed")),
            bias_init=_zeros(("embed",)),
            dtype=dtype,
            param_dtype=pdt,
            name="output",
        )(h)
        x = _layer_norm(cfg, "output_layer_norm")(x + dropout(h, deterministic=deterministic))
        return nn.with_logical_constraint(x.astype(dtype), ("batch", "length", "embed"))


class MLMHead(nn.Module):
    """dense -> GELU -> LayerNorm -> tied decoder + bias -> [..., padded V], padding columns masked
    (``vocab_mask``) and the vocabulary split over the ``vocab`` axis."""

    config: ModelConfig
    embeddings: Embeddings  # shared with the encoder: the decoder is tied to the word embeddings

    @nn.compact
    def __call__(self, hidden: jax.Array) -> jax.Array:
        cfg = self.config
        dtype, pdt = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        h = nn.Dense(
            cfg.hidden_size,
            kernel_init=_dense_init(cfg, ("embed", "embed_out")),
            bias_init=_zeros(("embed_out",)),
            dtype=dtype,
            param_dtype=pdt,
            name="dense",
        )(hidden)
        h = _layer_norm(cfg, "layer_norm")(jax.nn.gelu(h, approximate=False)).astype(dtype)
        # Pinned between the two tensor-parallel matmuls (dense: embed_out, decoder: vocab). Left free, the
        # partitioner laid out the decoder's input gradient wrongly on a mesh with data, fsdp and tensor > 1.
        h = nn.with_logical_constraint(h, ("batch", "length", "embed"))
        bias = self.param("bias", _zeros(("vocab",)), (cfg.padded_vocab_size,), pdt)
        logits = vocab_mask(cfg, add_bias(self.embeddings.attend(h), bias.astype(dtype)))
        return nn.with_logical_constraint(logits, ("batch", "length", "vocab"))


class XLMP(nn.Module):
    """XLM-R encoder with an optional prompt pool, and the masked-LM head.

    Returns a dict: ``logits`` (if computed; [..., padded_vocab_size], the padding columns at the lowest
    value: cut them with ``[..., :vocab_size]`` for a transformers-shaped result), ``hidden_states`` [B, T, D] (final layer, input tokens
    only), ``pool`` (``weights`` [B, M], ``scores``, ``query``; absent without a pool) and, when
    ``output_hidden_states``, ``all_hidden_states``: embeddings + each layer, prompt positions dropped.
    """

    config: ModelConfig

    def setup(self):
        cfg = self.config
        self.embeddings = Embeddings(cfg)
        if cfg.pool is not None:
            self.pool = PromptPool(
                cfg.pool, cfg.hidden_size, dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype)
            )
        layer_cls = EncoderLayer
        if cfg.remat != "none":
            layer_cls = nn.remat(EncoderLayer, policy=REMAT_POLICIES[cfg.remat], static_argnums=(3,))
        self.layers = [layer_cls(cfg, name=f"layer_{i}") for i in range(cfg.num_layers)]
        self.lm_head = MLMHead(cfg, self.embeddings)

    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array | None = None,
        positions: jax.Array | None = None,
        token_type_ids: jax.Array | None = None,
        *,
        mlm_positions: jax.Array | None = None,
        deterministic: bool = True,
        compute_logits: bool = True,
        output_hidden_states: bool = False,
    ) -> dict[str, Any]:
        """Runs the model.

        Args:
          input_ids: [B, T] token ids.
          attention_mask: [B, T], 1 for real tokens; default: ``input_ids != pad``.
          positions: [B, T] position-table ids; default: XLM-R's (see ``xlmr_positions``).
          token_type_ids: [B, T]; default zeros.
          mlm_positions: [B, K] indices into T; if given, logits are computed only there ([B, K, V]):
            the 250k-vocabulary head is most of the step, and only masked positions need it.
          deterministic: disables dropout.
          compute_logits: False skips the head (for embeddings/retrieval).
          output_hidden_states: also return every layer's hidden states.
        """
        cfg = self.config
        x, attention_mask = self._embed(input_ids, attention_mask, positions, token_type_ids, deterministic)
        outputs: dict[str, Any] = {}
        mask = attention_mask
        num_prompt = 0
        if cfg.pool is not None:
            prompts, outputs["pool"] = self.pool(x, attention_mask)
            num_prompt = prompts.shape[1]
            x = jnp.concatenate([prompts.astype(x.dtype), x], axis=1)
            prompt_mask = jnp.ones((x.shape[0], num_prompt), attention_mask.dtype)
            mask = jnp.concatenate([prompt_mask, attention_mask], axis=1)

        all_hidden = [x[:, num_prompt:]]
        for layer in self.layers:
            x = layer(x, mask, deterministic)
            if output_hidden_states:
                all_hidden.append(x[:, num_prompt:])
        hidden = x[:, num_prompt:]  # heads and losses see only the input's own tokens
        outputs["hidden_states"] = hidden
        if output_hidden_states:
            outputs["all_hidden_states"] = tuple(all_hidden)
        if compute_logits:
            if mlm_positions is not None:
                hidden = jnp.take_along_axis(hidden, mlm_positions[..., None], axis=1)
            outputs["logits"] = self.lm_head(hidden)
        return outputs

    def _embed(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array | None,
        positions: jax.Array | None,
        token_type_ids: jax.Array | None,
        deterministic: bool,
    ) -> tuple[jax.Array, jax.Array]:
        """The embedding block's output [B, T, D] and the attention mask, with XLM-R's defaults filled in."""
        cfg = self.config
        check_inputs(cfg, input_ids, positions)
        if attention_mask is None:
            attention_mask = (input_ids != cfg.pad_token_id).astype(jnp.int32)
        if positions is None:
            positions = xlmr_positions(input_ids, cfg.pad_token_id)
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        return self.embeddings(input_ids, positions, token_type_ids, deterministic), attention_mask

    def route(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array | None = None,
        positions: jax.Array | None = None,
        token_type_ids: jax.Array | None = None,
    ) -> dict[str, jax.Array]:
        """The pool's ``{weights, scores, query}`` for the inputs (no dropout), without running the encoder.

        The same routing ``__call__`` uses; cheap enough to compare an input's masked and clean forms.
        """
        if self.config.pool is None:
            raise ValueError("route() needs a model with a prompt pool (model.pool is disabled)")
        x, attention_mask = self._embed(input_ids, attention_mask, positions, token_type_ids, True)
        return self.pool(x, attention_mask)[1]


def init_params(config: ModelConfig, rng: jax.Array, length: int = 8) -> dict:
    """Initial (boxed, logically-annotated) variables for ``config``."""
    ids = jnp.full((1, length), 5, jnp.int32)
    return XLMP(config).init(rng, ids, jnp.ones_like(ids))


def param_shapes(config: ModelConfig) -> dict:
    """Parameter shapes without allocating them (jax.eval_shape)."""
    variables = jax.eval_shape(lambda: init_params(config, jax.random.key(0)))
    return nn.unbox(variables["params"])


def count_params(config: ModelConfig) -> dict[str, int]:
    """Parameter counts: total, encoder (everything but the pool) and pool, without the vocabulary padding
    (so they compare with transformers' XLM-R), and vocab_padding: the padding rows' (allocated) parameters."""
    shapes = param_shapes(config)
    pool = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes.get("pool", {})))
    allocated = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))
    extra_rows = config.padded_vocab_size - config.vocab_size
    padding = sum(extra_rows * int(np.prod(shapes[outer][name].shape[1:])) for outer, name in VOCAB_PARAMS)
    total = allocated - padding
    return {"total": total, "encoder": total - pool, "pool": pool, "vocab_padding": padding}
