"""The encoder's building blocks: embeddings, self-attention, the post-LN layer, the MLM head.

Each is a Flax linen module over a ``ModelConfig``; parameters and activations carry logical axis names
(``vocab``, ``embed``, ``mlp``, ``heads``, ``kv``, ``batch``, ``length``...) and nothing of meshes. The
class names and ``name=`` attributes fix the parameter paths that checkpoints and exports hold.
``add_bias`` and ``Dropout`` are CPU-speed tunings (bench/cpu_ops.py, bench/tuning_ab.py).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from xlmp_jax.model.model_config import ModelConfig
from xlmp_jax.model.vocab_padding import vocab_mask, vocab_rows_init


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


def _dense(config: ModelConfig, features: int, axes: tuple[str, str], name: str) -> nn.Dense:
    """A Dense layer whose kernel carries the logical ``axes`` (in, out) and whose bias carries ``out``."""
    return nn.Dense(
        features,
        kernel_init=_dense_init(config, axes),
        bias_init=_zeros((axes[1],)),
        dtype=jnp.dtype(config.dtype),
        param_dtype=jnp.dtype(config.param_dtype),
        name=name,
    )


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
            vocab_rows_init(cfg.vocab_size, nn.initializers.normal(cfg.initializer_range), ("vocab", "embed")),
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
        dtype = jnp.dtype(cfg.dtype)
        dropout = Dropout(cfg.hidden_dropout)
        attn = SelfAttention(cfg, name="attention")(x, mask, deterministic)
        x = _layer_norm(cfg, "attention_layer_norm")(x + dropout(attn, deterministic=deterministic))
        x = nn.with_logical_constraint(x.astype(dtype), ("batch", "length", "embed"))
        h = _dense(cfg, cfg.intermediate_size, ("embed", "mlp"), "intermediate")(x)
        h = nn.with_logical_constraint(jax.nn.gelu(h, approximate=False), ("batch", "length", "mlp"))
        h = _dense(cfg, cfg.hidden_size, ("mlp", "embed"), "output")(h)
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
        h = _dense(cfg, cfg.hidden_size, ("embed", "embed_out"), "dense")(hidden)
        h = _layer_norm(cfg, "layer_norm")(jax.nn.gelu(h, approximate=False)).astype(dtype)
        # Pinned between the two tensor-parallel matmuls (dense: embed_out, decoder: vocab). Left free, the
        # partitioner laid out the decoder's input gradient wrongly on a mesh with data, fsdp and tensor > 1.
        h = nn.with_logical_constraint(h, ("batch", "length", "embed"))
        bias = self.param("bias", _zeros(("vocab",)), (cfg.padded_vocab_size,), pdt)
        logits = vocab_mask(add_bias(self.embeddings.attend(h), bias.astype(dtype)), cfg.vocab_size)
        return nn.with_logical_constraint(logits, ("batch", "length", "vocab"))
