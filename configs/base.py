"""base: XLM-R base (12 layers, 768 wide, 250k vocabulary, 512 tokens) with the prompt pool."""

from configs.common import make_config


def get_config():
    return make_config(
        "base",
        pool=True,
        seq_length=512,
        # Pool: the defaults of xlmp_jax.pool.PoolConfig (M=256, Lp=4, cosine / 0.1, soft). Our choice.
        model_overrides=dict(dtype="bfloat16"),  # bf16 compute, fp32 master weights
        train=dict(
            # Batch, learning rate and schedule: RoBERTa/XLM-R base style at a smaller budget. Our choice.
            steps=125_000,
            batch_size=2048,
            learning_rate=6e-4,
            warmup_steps=10_000,
            log_every=100,
            checkpoint_every=2000,
            keep_checkpoints=3,
            eval_every=2000,
            eval_batch_size=256,
            eval_batches=16,
        ),
        mesh=dict(data=-1, fsdp=1, tensor=1),  # 280M params fit replicated; pure data parallel. Our choice.
    )
