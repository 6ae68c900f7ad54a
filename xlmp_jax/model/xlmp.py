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
against ``vocab_size``) and their logits are masked to the lowest value (``xlmp_jax.model.vocab_padding``).
Conversions to and from transformers strip and re-add them (``hf.names``, ``pad_vocab``). The blocks
(embeddings, attention, layer, head) are in ``xlmp_jax.model.layers``; the hyper-parameters in
``xlmp_jax.model.model_config``.

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

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from xlmp_jax.model.layers import Embeddings, EncoderLayer, MLMHead
from xlmp_jax.model.model_config import REMAT_POLICIES, ModelConfig
from xlmp_jax.model.prompt_pool import PromptPool
from xlmp_jax.model.vocab_padding import VOCAB_PARAMS


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


def remat_layer(cfg: ModelConfig) -> type[nn.Module]:
    """``EncoderLayer``, rematerialised by ``cfg.remat``'s policy (``deterministic`` static)."""
    if cfg.remat == "none":
        return EncoderLayer
    return nn.remat(EncoderLayer, policy=REMAT_POLICIES[cfg.remat], static_argnums=(3,))


class ScannedLayer(nn.Module):
    """One encoder layer as the body of ``nn.scan``: (x, mask, deterministic, collect) -> (x, x or None).

    ``collect`` returns each layer's output as the scan's stacked output (``output_hidden_states``).
    """

    config: ModelConfig

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array, deterministic: bool, collect: bool):
        x = remat_layer(self.config)(self.config, name="layer")(x, mask, deterministic)
        return x, (x if collect else None)


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
        if cfg.scan_layers:
            self.layers = nn.scan(
                ScannedLayer,
                variable_axes={"params": 0},
                split_rngs={"params": True, "dropout": True},
                in_axes=(nn.broadcast, nn.broadcast, nn.broadcast),
                length=cfg.num_layers,
                metadata_params={nn.PARTITION_NAME: "layers"},
            )(cfg)
        else:
            layer_cls = remat_layer(cfg)
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
        if cfg.scan_layers:
            x, stacked = self.layers(x, mask, deterministic, output_hidden_states)
            if output_hidden_states:
                all_hidden += [stacked[i][:, num_prompt:] for i in range(cfg.num_layers)]
        else:
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
