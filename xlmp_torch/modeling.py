"""The XLM-P forward pass around a loaded transformers ``XLMRobertaForMaskedLM``.

It reuses the HF model's own modules (embeddings, encoder, LM head), so its weights, dropout, attention
implementation and fine-tuning tools are transformers', and adds only what transformers has no slot for:

  embeddings = model.roberta.embeddings(input_ids)              (LayerNorm + dropout included)
  query      = pool(embeddings over non-pad tokens)            (mean / max; fp32)
  scores     = cos(query, keys) / temperature  (or dot)        -> weights = softmax (all, or top-k only)
  prompt     = sum_j weights_j * prompts_j                      -> [B, Lp, D]
  encoder    over concat(prompt, embeddings), mask 1 on the Lp prompt positions
  logits     = model.lm_head(hidden[:, Lp:])                    (prompt positions dropped)

This is the computation of ``xlmp_jax.model.xlmp.XLMP`` / ``xlmp_jax.model.prompt_pool.PromptPool``; the export tests check
the two agree to 1e-4 in fp32.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import torch
from torch import nn
from transformers import XLMRobertaForMaskedLM
from transformers.masking_utils import create_bidirectional_mask
from transformers.utils import ModelOutput

POOL_WEIGHTS_FILE = "prompt_pool.safetensors"
POOL_CONFIG_FILE = "prompt_pool.json"
POOL_FORMAT = "xlmp-prompt-pool/1"
_POOLINGS, _SCORES, _RETRIEVALS = ("mean", "max"), ("cosine", "dot"), ("soft", "topk")


@dataclasses.dataclass(frozen=True)
class PromptPoolConfig:
    """The pool settings (``prompt_pool.json``); same meaning as ``xlmp_jax.model.prompt_pool.PoolConfig``."""

    size: int
    length: int
    hidden_size: int
    pooling: str = "mean"
    score: str = "cosine"
    temperature: float = 0.1
    retrieval: str = "soft"
    top_k: int = 4
    stop_gradient_query: bool = False

    def __post_init__(self):
        if self.pooling == "first":
            raise ValueError(
                "pool pooling='first' is not supported: it gives every input the same query (the <s> row of "
                f"the embedding layer); use one of {_POOLINGS}"
            )
        for name, allowed in (("pooling", _POOLINGS), ("score", _SCORES), ("retrieval", _RETRIEVALS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"pool {name}={getattr(self, name)!r} is not one of {allowed}")
        if not self.temperature > 0:
            raise ValueError(f"pool temperature must be > 0, got {self.temperature!r}")
        if self.retrieval == "topk" and not 0 < self.top_k <= self.size:
            raise ValueError(f"pool top_k={self.top_k} must be in [1, size={self.size}]")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PromptPoolConfig:
        """From ``prompt_pool.json``; keys that do not change the forward pass (``format``, the inits
        ``init_std`` / ``prompt_init_std``, the training-only ``key_loss_weight`` / ``diversity_loss_weight``)
        are ignored."""
        fmt = values.get("format", POOL_FORMAT)
        if fmt != POOL_FORMAT:
            raise ValueError(f"prompt pool format {fmt!r} is not {POOL_FORMAT!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


def _l2_normalize(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return x * torch.rsqrt(torch.clamp((x * x).sum(dim=-1, keepdim=True), min=eps * eps))


class PromptPool(nn.Module):
    """M keys [M, D] and M prompts [M, Lp, D]; each input retrieves a weighted mix of prompts."""

    def __init__(self, config: PromptPoolConfig):
        super().__init__()
        self.config = config
        self.keys = nn.Parameter(torch.zeros(config.size, config.hidden_size))
        self.prompts = nn.Parameter(torch.zeros(config.size, config.length, config.hidden_size))

    def query(self, embeddings: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Pools ``embeddings`` [B, T, D] over tokens with ``mask`` 1 into [B, D] (fp32); empty rows -> 0."""
        x = embeddings.float()
        m = mask.to(x.dtype).unsqueeze(-1)
        pooling = self.config.pooling
        if pooling == "mean":
            return (x * m).sum(dim=1) / torch.clamp(m.sum(dim=1), min=1.0)
        if pooling == "max":
            pooled = torch.where(m > 0, x, torch.full_like(x, -torch.inf)).amax(dim=1)
            return torch.where(torch.isfinite(pooled), pooled, torch.zeros_like(pooled))
        raise ValueError(f"pool pooling={pooling!r} is not one of {_POOLINGS}")

    def forward(self, embeddings: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Returns the retrieved prompts [B, Lp, D] and ``{weights, scores, query}``."""
        cfg = self.config
        query = self.query(embeddings, mask)
        if cfg.stop_gradient_query:
            query = query.detach()
        keys = self.keys.float()
        if cfg.score == "cosine":
            query_s, keys = _l2_normalize(query), _l2_normalize(keys)
        else:
            query_s = query
        scores = query_s @ keys.T / cfg.temperature
        logits = scores
        if cfg.retrieval == "topk":
            selected = torch.topk(scores, cfg.top_k, dim=-1).indices
            keep = torch.zeros_like(scores, dtype=torch.bool).scatter(-1, selected, True)
            logits = torch.where(keep, scores, torch.full_like(scores, -torch.inf))
        weights = torch.softmax(logits, dim=-1)
        retrieved = torch.einsum("bm,mld->bld", weights.to(self.prompts.dtype), self.prompts)
        return retrieved.to(embeddings.dtype), {"weights": weights, "scores": scores, "query": query}


@dataclasses.dataclass
class XLMPOutput(ModelOutput):
    """``logits`` [B, T, V] and ``hidden_states`` [B, T, D] cover the input's tokens only (prompts dropped)."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    hidden_states: torch.Tensor | None = None
    pool_weights: torch.Tensor | None = None
    pool_scores: torch.Tensor | None = None
    all_hidden_states: tuple[torch.Tensor, ...] | None = None


class XLMPForMaskedLM(nn.Module):
    """XLM-P for PyTorch: a transformers ``XLMRobertaForMaskedLM`` with the prompt pool in front.

    ``pool=None`` gives exactly the wrapped XLM-R model (the baseline).
    """

    def __init__(self, model: XLMRobertaForMaskedLM, pool: PromptPool | None = None):
        super().__init__()
        if pool is not None and pool.config.hidden_size != model.config.hidden_size:
            raise ValueError(
                f"pool hidden_size={pool.config.hidden_size} differs from the model's {model.config.hidden_size}"
            )
        self.model = model
        self.pool = pool

    @property
    def config(self):
        return self.model.config

    @classmethod
    def from_pretrained(cls, path: str, **kwargs: Any) -> XLMPForMaskedLM:
        """Loads an export directory; ``kwargs`` go to ``XLMRobertaForMaskedLM.from_pretrained``."""
        model = XLMRobertaForMaskedLM.from_pretrained(path, **kwargs)
        pool = None
        config_path = os.path.join(path, POOL_CONFIG_FILE)
        if os.path.isfile(config_path):
            from safetensors.torch import load_file

            with open(config_path, encoding="utf-8") as f:
                pool = PromptPool(PromptPoolConfig.from_dict(json.load(f)))
            weights_path = os.path.join(path, POOL_WEIGHTS_FILE)
            if not os.path.isfile(weights_path):
                raise FileNotFoundError(f"{path!r} has {POOL_CONFIG_FILE} but no {POOL_WEIGHTS_FILE}")
            missing, unexpected = pool.load_state_dict(load_file(weights_path), strict=False)
            if missing or unexpected:
                raise ValueError(f"{weights_path!r}: missing {missing}, unexpected {unexpected}")
            pool.to(device=model.device, dtype=model.dtype)
        return cls(model, pool)

    def save_pretrained(self, path: str) -> None:
        """Writes the same layout as the JAX export (e.g. after fine-tuning), minus the tokenizer files."""
        from safetensors.torch import save_file

        self.model.save_pretrained(path)
        if self.pool is not None:
            tensors = {k: v.detach().float().cpu().contiguous() for k, v in self.pool.state_dict().items()}
            save_file(tensors, os.path.join(path, POOL_WEIGHTS_FILE), metadata={"format": "pt"})
            with open(os.path.join(path, POOL_CONFIG_FILE), "w", encoding="utf-8") as f:
                json.dump({"format": POOL_FORMAT, **dataclasses.asdict(self.pool.config)}, f, indent=2)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> XLMPOutput:
        """Masked-LM logits for ``input_ids`` [B, T]; ``labels`` (-100 = ignore) gives the MLM loss."""
        if attention_mask is None:
            attention_mask = (input_ids != self.config.pad_token_id).long()
        x = self.model.roberta.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        mask = attention_mask
        num_prompt = 0
        pool_out: dict[str, torch.Tensor] = {}
        if self.pool is not None:
            prompts, pool_out = self.pool(x, attention_mask)
            num_prompt = prompts.shape[1]
            x = torch.cat([prompts, x], dim=1)
            mask = torch.cat([attention_mask.new_ones(x.shape[0], num_prompt), attention_mask], dim=1)
        mask4d = create_bidirectional_mask(config=self.config, inputs_embeds=x, attention_mask=mask)
        all_hidden = [x[:, num_prompt:]]
        for layer in self.model.roberta.encoder.layer:
            x = layer(x, mask4d)
            if output_hidden_states:
                all_hidden.append(x[:, num_prompt:])
        hidden = x[:, num_prompt:]
        logits = self.model.lm_head(hidden)
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1))
        return XLMPOutput(
            loss=loss,
            logits=logits,
            hidden_states=hidden,
            pool_weights=pool_out.get("weights"),
            pool_scores=pool_out.get("scores"),
            all_hidden_states=tuple(all_hidden) if output_hidden_states else None,
        )
