"""large: XLM-R large (24 layers, 1024 wide, 250k vocabulary, 512 tokens) with the prompt pool.

Needs XLM-R's vocabulary, as ``configs/base.py`` says (``--config.data.vocab_path=...``).
"""

from configs.common import PRETRAIN_TRAIN, make_config


def get_config():
    return make_config(
        "large",
        pool=True,
        seq_length=512,
        # Pool: the defaults of xlmp_jax.model.prompt_pool.PoolConfig (M=256, Lp=4, cosine / 0.1, soft). Our choice.
        model_overrides=dict(dtype="bfloat16", remat="dots_no_batch"),
        train=dict(PRETRAIN_TRAIN, learning_rate=4e-4),  # RoBERTa/XLM-R large learning rate. Our choice.
        mesh=dict(data=1, fsdp=-1, tensor=1),  # 560M params + Adam state: shard them (FSDP). Our choice.
    )
