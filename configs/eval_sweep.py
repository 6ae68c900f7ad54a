"""Eval sweep: every listed checkpoint x every listed eval, results in ``out`` (cells already there are skipped).

    python -m xlmp_jax.evaluate --config=configs/eval_sweep.py \
        --config.workdirs=workdirs/tiny,workdirs/tiny_baseline --config.out=evals/tiny

Lists are comma-separated strings so they override cleanly from the command line. Each eval's settings block
``c.<name>`` is that eval's ``config()`` (``xlmp_jax/evals/<name>.py``).
"""

import ml_collections

from xlmp_jax import evals
from xlmp_jax.runtime import compile_cache


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.workdirs = ""  # comma-separated work directories (of python -m xlmp_jax.train)
    c.steps = "all"  # all | latest | comma-separated step numbers (must exist in every work directory)
    c.out = ""  # results directory: results.csv/.json, summary.md, plots/, tb/, cells.jsonl
    # any of: mlm, retrieval, pool, classification, tagging, pos, tatoeba, bucc, xquad, mlqa, tydiqa, package
    # (package: the shipped cross-lingual task, data_pipelines/sample/transfer/; fine-tuned on English train
    # strings, learning rate (package.learning_rates) and step (package.eval_every) chosen on English dev only,
    # package.seeds fine-tuning seeds; rows: English and each target language's test accuracy, their mean
    # (all), chance_uniform, majority_rate and the character n-gram baseline (ngram_accuracy))
    c.evals = "mlm,retrieval,pool"
    c.batch_size = 32  # sentences per forward pass
    c.max_length = 128  # tokens per sentence, <s> and </s> included
    c.seed = 0
    c.progress = True  # tqdm bar over the sweep's cells
    c.tensorboard = True  # scalars under out/tb/<workdir name>/
    # JAX's persistent compilation cache; '' = off; a set JAX_COMPILATION_CACHE_DIR wins (xlmp_jax/runtime/compile_cache.py)
    c.compilation_cache_dir = compile_cache.DEFAULT_DIR
    for name in evals.REGISTRY:  # every eval listed above
        c[name] = evals.load(name).config()
    return c
