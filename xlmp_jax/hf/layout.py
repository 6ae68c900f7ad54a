"""What an export directory holds: its file names and how its ``config.json`` maps onto ``ModelConfig``.

An export directory is a plain transformers checkpoint (``config.json``, ``model.safetensors``, the
SentencePiece model and tokenizer files), so ``AutoModelForMaskedLM`` / ``AutoTokenizer.from_pretrained(OUT)``
load it as XLM-R; the pool, which transformers has no slot for, goes into ``prompt_pool.safetensors`` (``keys``
[M, D], ``prompts`` [M, Lp, D]) and ``prompt_pool.json`` (its config), read by ``xlmp_torch.XLMPForMaskedLM``.
The writer (``hf.writer``) and the readers (``hf.load``) both take the layout from here, so they cannot drift.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from xlmp_jax.model.model_config import ModelConfig
from xlmp_jax.model.prompt_pool import PoolConfig

WEIGHTS_FILE = "model.safetensors"
POOL_WEIGHTS_FILE = "prompt_pool.safetensors"
POOL_CONFIG_FILE = "prompt_pool.json"
SPM_FILE = "sentencepiece.bpe.model"  # the name transformers' XLMRobertaTokenizer looks for
POOL_FORMAT = "xlmp-prompt-pool/1"
SPECIAL_TOKENS = {
    "bos_token": "<s>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
    "sep_token": "</s>",
    "pad_token": "<pad>",
    "cls_token": "<s>",
    "mask_token": "<mask>",
}

# (transformers config field, ModelConfig field): what must agree for an import to be exact.
_HF_FIELDS = (
    ("vocab_size", "vocab_size"),
    ("hidden_size", "hidden_size"),
    ("num_hidden_layers", "num_layers"),
    ("num_attention_heads", "num_heads"),
    ("intermediate_size", "intermediate_size"),
    ("max_position_embeddings", "max_position_embeddings"),
    ("type_vocab_size", "type_vocab_size"),
    ("pad_token_id", "pad_token_id"),
    ("layer_norm_eps", "layer_norm_eps"),
)


def hf_config_dict(config: ModelConfig) -> dict[str, Any]:
    """``XLMRobertaConfig`` arguments describing the encoder of ``config``."""
    return dict(
        architectures=["XLMRobertaForMaskedLM"],
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        intermediate_size=config.intermediate_size,
        hidden_act="gelu",  # erf GELU, as ours
        hidden_dropout_prob=config.hidden_dropout,
        attention_probs_dropout_prob=config.attention_dropout,
        max_position_embeddings=config.max_position_embeddings,
        type_vocab_size=config.type_vocab_size,
        initializer_range=config.initializer_range,
        layer_norm_eps=config.layer_norm_eps,
        pad_token_id=config.pad_token_id,
        bos_token_id=0,
        eos_token_id=2,
        tie_word_embeddings=True,
    )


def pool_config_dict(config: ModelConfig) -> dict[str, Any]:
    """What ``prompt_pool.json`` holds: the PoolConfig fields plus the hidden size and a format tag."""
    assert config.pool is not None
    return {"format": POOL_FORMAT, "hidden_size": config.hidden_size, **dataclasses.asdict(config.pool)}


def read_hf_config(hf_dir: str) -> dict[str, Any]:
    path = os.path.join(hf_dir, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{hf_dir!r} is not a transformers model directory: it has no config.json")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def check_hf_config(hf_dir: str, hf: Mapping[str, Any], config: ModelConfig) -> None:
    """Raises a ValueError naming ``hf_dir`` and the first field where it differs from ``config``."""
    model_type = hf.get("model_type")
    if model_type != "xlm-roberta":
        raise ValueError(f"{hf_dir!r} holds model_type={model_type!r}, not 'xlm-roberta' (XLMRobertaForMaskedLM)")
    archs = hf.get("architectures") or []
    if archs and "XLMRobertaForMaskedLM" not in archs:
        raise ValueError(f"{hf_dir!r} holds architectures={archs}, not XLMRobertaForMaskedLM")
    act = hf.get("hidden_act", "gelu")
    if act != "gelu":
        raise ValueError(f"{hf_dir!r} has hidden_act={act!r}; the model computes 'gelu' (erf form)")
    pos = hf.get("position_embedding_type", "absolute")
    if pos != "absolute":
        raise ValueError(f"{hf_dir!r} has position_embedding_type={pos!r}; the model has absolute positions")
    for hf_name, ours in _HF_FIELDS:
        want = getattr(config, ours)
        got = hf.get(hf_name)
        same = got is not None and (np.isclose(got, want) if isinstance(want, float) else got == want)
        if not same:
            raise ValueError(f"{hf_dir!r} has {hf_name}={got!r} but model.{ours}={want!r}")


def read_exported_config(directory: str) -> ModelConfig:
    """The ModelConfig of an export directory (``config.json`` + ``prompt_pool.json`` if present)."""
    hf = read_hf_config(directory)
    pool = None
    pool_path = os.path.join(directory, POOL_CONFIG_FILE)
    if os.path.isfile(pool_path):
        with open(pool_path, encoding="utf-8") as f:
            values = json.load(f)
        fields = {f.name for f in dataclasses.fields(PoolConfig)}
        pool = PoolConfig.from_saved({k: v for k, v in values.items() if k in fields})
    return ModelConfig(
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=hf["num_attention_heads"],
        intermediate_size=hf["intermediate_size"],
        max_position_embeddings=hf["max_position_embeddings"],
        type_vocab_size=hf.get("type_vocab_size", 1),
        pad_token_id=hf.get("pad_token_id", 1),
        layer_norm_eps=hf.get("layer_norm_eps", 1e-5),
        hidden_dropout=hf.get("hidden_dropout_prob", 0.1),
        attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
        initializer_range=hf.get("initializer_range", 0.02),
        pool=pool,
    )
