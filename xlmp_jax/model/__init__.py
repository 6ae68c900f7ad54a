"""The encoder: XLM-R plus the prompt pool, in Flax linen (see ARCHITECTURE.md).

``model_config`` (``ModelConfig``, the named sizes), ``layers`` (embeddings, attention, the post-LN layer, the
MLM head), ``xlmp`` (the encoder ``XLMP``), ``prompt_pool`` (``PoolConfig``, ``PromptPool``), ``layer_stack``
(a Python loop of layers <-> one scanned stack) and ``vocab_padding``. Model code names logical axes only and
builds no mesh and reads no run config (``layer_stack`` carries an abstract leaf's given sharding along when
it adds or removes the layer axis). The encoder's public names are re-exported here, so
``from xlmp_jax.model import XLMP`` works.
"""

from xlmp_jax.model.model_config import ModelConfig
from xlmp_jax.model.prompt_pool import PoolConfig, PromptPool
from xlmp_jax.model.xlmp import XLMP, count_params, init_params, param_shapes

__all__ = ["XLMP", "ModelConfig", "PoolConfig", "PromptPool", "count_params", "init_params", "param_shapes"]
