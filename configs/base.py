"""base: XLM-R base (12 layers, 768 wide, 250k vocabulary, 512 tokens) with the prompt pool."""

from configs.common import PRETRAIN_TRAIN, make_config


def get_config():
    return make_config(
        "base",
        pool=True,
        seq_length=512,
        # Pool: the defaults of xlmp_jax.pool.PoolConfig (M=256, Lp=4, cosine / 0.1, soft). Our choice.
        model_overrides=dict(dtype="bfloat16"),  # bf16 compute, fp32 master weights
        train=dict(PRETRAIN_TRAIN, learning_rate=6e-4),  # RoBERTa/XLM-R base learning rate. Our choice.
        mesh=dict(data=-1, fsdp=1, tensor=1),  # 280M params fit replicated; pure data parallel. Our choice.
    )
