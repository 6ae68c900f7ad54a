"""What every eval of the sweep gets: one cell's context (checkpoint, encoder, tokenizer) and its row type.

An eval is ``run(ctx, cfg) -> rows``: ``ctx`` is an ``EvalContext`` (shared by every eval of a checkpoint),
``cfg`` the eval's own settings block of the sweep config; rows are ``(language, metric, value)`` and the
sweep adds workdir, step and model.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import ml_collections

from data_pipelines.vocab import SAMPLE_VOCAB_PATH, XLMRVocabulary
from xlmp_jax.hf.encoder import Encoder, Tokenizer

Row = tuple[str, str, float]  # (language, metric, value)


def split_list(value: Any) -> list[str]:
    """'a,b' / ('a', 'b') -> ['a', 'b'] (empty items dropped)."""
    items = value.split(",") if isinstance(value, str) else list(value or ())
    return [str(x).strip() for x in items if str(x).strip()]


@dataclasses.dataclass
class EvalContext:
    """Everything one cell's eval needs besides its own settings."""

    workdir: str
    step: int
    run_config: ml_collections.ConfigDict
    encoder: Encoder
    sweep: ml_collections.ConfigDict
    artifact_dir: str
    seed: int | None = None  # the cell's fine-tuning seed (evals with ``seeds``); None: the sweep's seed

    @functools.cached_property
    def tokenizer(self) -> Tokenizer:
        path = vocab_path(self.run_config)
        tokenizer = load_tokenizer(path)
        size = getattr(tokenizer, "vocab_size", None)
        if size is not None and size != self.encoder.config.vocab_size:
            raise ValueError(
                f"vocabulary {path!r} has {size} ids but the checkpoint in {self.workdir!r} has "
                f"model.vocab_size={self.encoder.config.vocab_size}"
            )
        return tokenizer


def vocab_path(run_config: ml_collections.ConfigDict) -> str:
    data = run_config.get("data") or {}
    path = data.get("vocab_path", "")
    if not path:
        path = SAMPLE_VOCAB_PATH
    return path


@functools.lru_cache(maxsize=4)
def load_tokenizer(path: str) -> Tokenizer:
    return XLMRVocabulary(path)
