"""Shared pieces of the tests that compare against transformers: real sentences, tiny configs, padding."""

import numpy as np
import transformers

from xlmp_jax.model.model_config import ModelConfig

# Real text in six scripts (Latin, Cyrillic, Arabic, Han, Devanagari), for logits and tokenizer checks.
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Быстрая коричневая лиса прыгает через ленивую собаку.",
    "الثعلب البني السريع يقفز فوق الكلب الكسول.",
    "敏捷的棕色狐狸跳过了懒狗。",
    "कृपया अपना पासवर्ड दर्ज करें।",
]


def pad_rows(rows: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pads token rows into (ids, attention mask) [B, longest row]."""
    length = max(map(len, rows))
    ids = np.full((len(rows), length), pad_id, np.int32)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
    return ids, (ids != pad_id).astype(np.int32)


def hf_config(vocab_size: int, **overrides) -> transformers.XLMRobertaConfig:
    """A tiny XLM-R config (2 layers, 32 wide) with XLM-R's special-token ids."""
    values = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=130,
        type_vocab_size=1,
        layer_norm_eps=1e-5,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )
    values.update(overrides)
    return transformers.XLMRobertaConfig(**values)


def our_config(hf: transformers.XLMRobertaConfig, **overrides) -> ModelConfig:
    """Our ModelConfig for a transformers config (no pool unless ``pool=`` is given)."""
    values = dict(
        vocab_size=hf.vocab_size,
        hidden_size=hf.hidden_size,
        num_layers=hf.num_hidden_layers,
        num_heads=hf.num_attention_heads,
        intermediate_size=hf.intermediate_size,
        max_position_embeddings=hf.max_position_embeddings,
        type_vocab_size=hf.type_vocab_size,
        layer_norm_eps=hf.layer_norm_eps,
        pool=None,
    )
    values.update(overrides)
    return ModelConfig(**values)
