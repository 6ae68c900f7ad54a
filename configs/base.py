"""base: XLM-R base (12 layers, 768 wide, 250k vocabulary, 512 tokens) with the prompt pool.

Needs XLM-R's vocabulary: ``--config.data.vocab_path=/path/to/sentencepiece.bpe.model`` (250,000 pieces ->
250,002 ids = ``model.vocab_size``). The default ``data.vocab_path`` is the shipped sample's 8,002-id model,
which the trainer and ``launch.preflight`` refuse (``data_pipelines.data_checks``: the sizes must be equal); the data
benchmark and the memory plan read only the data block or the model shapes and work as they are.
"""

from configs.common import PRETRAIN_TRAIN, make_config


def get_config():
    return make_config(
        "base",
        pool=True,
        seq_length=512,
        # Pool: the defaults of xlmp_jax.model.prompt_pool.PoolConfig (M=256, Lp=4, cosine / 0.1, soft). Our choice.
        model_overrides=dict(dtype="bfloat16"),  # bf16 compute, fp32 master weights
        train=dict(PRETRAIN_TRAIN, learning_rate=6e-4),  # RoBERTa/XLM-R base learning rate. Our choice.
        mesh=dict(data=-1, fsdp=1, tensor=1),  # 280M params fit replicated; pure data parallel. Our choice.
    )
