"""xlmp: JAX/Flax pre-training of XLM-P, an XLM-R encoder with a prompt pool (soft language clustering)."""

from xlmp_jax.runtime import platforms

platforms.skip_absent_tpu()  # before any device query: no libtpu probe on machines without a TPU

from xlmp_jax.hf.load import load_pretrained  # noqa: E402
from xlmp_jax.model.model_config import ModelConfig  # noqa: E402
from xlmp_jax.model.prompt_pool import PoolConfig, PromptPool  # noqa: E402
from xlmp_jax.model.xlmp import XLMP, count_params  # noqa: E402

__all__ = ["XLMP", "ModelConfig", "PoolConfig", "PromptPool", "count_params", "load_pretrained"]
