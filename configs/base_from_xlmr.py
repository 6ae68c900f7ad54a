"""base_from_xlmr: continued pre-training from XLM-R base's released weights to XLM-P (a fresh pool added).

    python -m xlmp_jax.train --config=configs/base_from_xlmr.py --workdir=gs://BUCKET/base_from_xlmr \\
      --config.init_from_hf=/path/to/xlm-roberta-base \\
      --config.data.vocab_path=/path/to/xlm-roberta-base/sentencepiece.bpe.model

``init_from_hf`` is a transformers directory (``save_pretrained``: one safetensors file, a sharded index, or
``pytorch_model.bin``); its encoder and LM head are imported exactly, the pool starts fresh. The encoder
already knows the languages and the pool knows nothing, so they train differently (every value below is our
choice, not the paper's; the reason stands beside it):

* a pool-first phase: for the first ``POOL_FIRST`` updates only the pool trains (the encoder is frozen: no
  gradients, no optimizer step), so keys and prompts settle on the encoder's own representations before the
  encoder adapts to having prompts prepended, instead of the encoder being pushed around by random prompts;
* the pool at 10x the encoder's learning rate (1e-3, tiny's from-scratch rate), with its own short warm-up;
* the encoder at 1e-4, a sixth of RoBERTa-base's 6e-4 peak: adapted, not retrained; its warm-up starts when
  it unfreezes, so it never sees a full learning rate on the first noisy gradients through the new prompts;
* linear decay (XLM-R's schedule) over a continued-pre-training budget of 20k updates.
"""

import ml_collections

from configs.common import PRETRAIN_TRAIN, make_config, param_group

POOL_FIRST = 2000  # updates in which only the pool trains


def get_config():
    config = make_config(
        "base",
        pool=True,
        seq_length=512,
        model_overrides=dict(dtype="bfloat16"),  # bf16 compute, fp32 master weights
        train=dict(PRETRAIN_TRAIN, steps=20_000, learning_rate=1e-4, warmup_steps=1000, lr_schedule="linear"),
        mesh=dict(data=-1, fsdp=1, tensor=1),
    )
    config.train.param_groups = ml_collections.ConfigDict(
        dict(
            pool=param_group("pool/.*", lr_multiplier=10.0, warmup_steps=200),
            # everything but the pool: embeddings, layers, LM head
            encoder=param_group("(?!pool/).*", trainable_from=POOL_FIRST, warmup_steps=1000),
        )
    )
    return config
