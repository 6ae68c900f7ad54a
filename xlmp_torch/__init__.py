"""XLM-P in PyTorch: transformers' XLMRobertaForMaskedLM plus the prompt pool, loaded from an xlmp export.

Depends only on torch and transformers (no JAX), so an exported model can be fine-tuned anywhere::

    from xlmp_torch import XLMPForMaskedLM
    model = XLMPForMaskedLM.from_pretrained("exported/")   # written by `python -m xlmp_jax.export`
"""

from xlmp_torch.modeling import PromptPool, PromptPoolConfig, XLMPForMaskedLM, XLMPOutput

__all__ = ["PromptPool", "PromptPoolConfig", "XLMPForMaskedLM", "XLMPOutput"]
