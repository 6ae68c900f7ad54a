"""xlmp: JAX/Flax pre-training of XLM-P, an XLM-R encoder with a prompt pool (soft language clustering)."""

from xlmp_jax.model import XLMP, count_params
from xlmp_jax.model_config import ModelConfig
from xlmp_jax.pool import PoolConfig, PromptPool
from xlmp_jax.pretrained import load_pretrained

__all__ = ["XLMP", "ModelConfig", "PoolConfig", "PromptPool", "count_params", "load_pretrained"]
