"""xlmp: JAX/Flax pre-training of XLM-P, an XLM-R encoder with a prompt pool (soft language clustering)."""

from xlmp_jax.hf.load import load_pretrained
from xlmp_jax.model import XLMP, count_params
from xlmp_jax.model_config import ModelConfig
from xlmp_jax.pool import PoolConfig, PromptPool

__all__ = ["XLMP", "ModelConfig", "PoolConfig", "PromptPool", "count_params", "load_pretrained"]
