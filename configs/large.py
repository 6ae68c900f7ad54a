"""large: XLM-R large (24 layers, 1024 wide, 250k vocabulary, 512 tokens) with the prompt pool."""

from configs.common import make_config


def get_config():
    return make_config(
        "large",
        pool=True,
        seq_length=512,
        # Pool: the defaults of xlmp_jax.pool.PoolConfig (M=256, Lp=4, cosine / 0.1, soft). Our choice.
        model_overrides=dict(dtype="bfloat16", remat="dots_no_batch"),
        train=dict(
            # RoBERTa/XLM-R large style at a smaller budget. Our choice.
            steps=125_000,
            batch_size=2048,
            learning_rate=4e-4,
            warmup_steps=10_000,
            log_every=100,
            checkpoint_every=2000,
            keep_checkpoints=3,
            eval_every=2000,
            eval_batch_size=256,
            eval_batches=16,
        ),
        mesh=dict(data=1, fsdp=-1, tensor=1),  # 560M params + Adam state: shard them (FSDP). Our choice.
    )
