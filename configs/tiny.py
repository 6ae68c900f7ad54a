"""tiny (the default): a 2-layer, 64-wide XLM-P on the shipped sample; trains on 2 CPU cores in minutes."""

from configs.common import make_config

# The demo's languages: English plus the 18 of the shipped parallel set (13 scripts) and Swahili. Training and
# evaluating all 114 of the sample starts as fast (`--config.data.languages=()`); the demo mixes these 20 so its
# pool report stays readable in a terminal. Our choice.
TINY_LANGUAGES = (
    "en", "ar", "cy", "de", "el", "es", "eu", "fr", "he", "hi", "ja", "ka", "ko", "ru", "sw", "ta", "th", "tr", "vi", "zh",
)  # fmt: skip


def get_config():
    config = make_config(
        "tiny",
        pool=True,
        seq_length=128,
        # A small pool for a small model and corpus. Our choice.
        pool_overrides=dict(size=16, length=4),
        # No dropout: 300 steps are far from over-fitting, and the loss falls faster. Our choice.
        model_overrides=dict(hidden_dropout=0.0, attention_dropout=0.0),
        train=dict(
            steps=300,
            batch_size=32,
            learning_rate=3e-3,
            warmup_steps=30,
            log_every=25,
            checkpoint_every=100,
            keep_checkpoints=2,
            eval_every=100,
            eval_batch_size=32,
            eval_batches=0,  # every held-out row of every language (it is small)
            pool_report=True,  # the main job ends by showing what the pool learned
        ),
    )
    config.data.languages = TINY_LANGUAGES
    return config
