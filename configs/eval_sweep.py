"""Eval sweep: every listed checkpoint x every listed eval, results in ``out`` (cells already there are skipped).

    python -m xlmp_jax.evaluate --config=configs/eval_sweep.py \
        --config.workdirs=workdirs/tiny,workdirs/tiny_baseline --config.out=evals/tiny

Lists are comma-separated strings so they override cleanly from the command line.
"""

import ml_collections

from xlmp_jax import compile_cache


def finetune_config(**overrides) -> ml_collections.ConfigDict:
    """Settings of a zero-shot transfer eval (fine-tune on English, test every language)."""
    c = ml_collections.ConfigDict(
        dict(
            # auto: TFDS if data_dir is set, else local_dir if set, else a tiny task derived from the sample.
            source="auto",  # auto | tfds | local | sample
            data_dir="",  # TFDS data_dir holding prepared datasets
            tfds_train="",  # e.g. xtreme_xnli (train, premise/hypothesis per language), paws_x_wiki, wikiann
            tfds_train_split="train",
            tfds_test="",
            tfds_test_split="test",
            local_dir="",  # train.tsv + test-<lang>.tsv (classification) / train.conll + test-<lang>.conll
            languages="",  # test languages; '' = every parallel language of the sample (tfds/sample) or file found
            max_train=2000,  # 0 = all
            max_test=500,  # per language; 0 = all
            steps=200,
            batch_size=16,
            learning_rate=2e-5,  # XTREME's range for XLM-R base. Our choice.
            warmup_fraction=0.1,
            weight_decay=0.01,
            max_length=128,
            representation="cls",  # cls (<s>) or mean; classification only
        )
    )
    c.update(overrides)
    return c


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.workdirs = ""  # comma-separated work directories (of python -m xlmp_jax.train)
    c.steps = "all"  # all | latest | comma-separated step numbers (must exist in every work directory)
    c.out = ""  # results directory: results.csv/.json, summary.md, plots/, tb/, cells.jsonl
    c.evals = "mlm,retrieval,pool"  # any of: mlm, retrieval, pool, classification, tagging
    c.batch_size = 32  # sentences per forward pass
    c.max_length = 128  # tokens per sentence, <s> and </s> included
    c.seed = 0
    c.progress = True  # tqdm bar over the sweep's cells
    c.tensorboard = True  # scalars under out/tb/<workdir name>/
    # JAX's persistent compilation cache; '' = off; a set JAX_COMPILATION_CACHE_DIR wins (xlmp_jax/compile_cache.py)
    c.compilation_cache_dir = compile_cache.DEFAULT_DIR

    c.mlm = ml_collections.ConfigDict(
        dict(
            source="pipeline",  # pipeline (make_eval_data on the checkpoint's data config) | sample (validation lines)
            languages="",  # '' = the data config's languages (every sample language by default)
            batch_size=16,
            max_batches=8,  # batches per language; 0 = the whole validation split
        )
    )
    c.retrieval = ml_collections.ConfigDict(
        dict(
            layer="middle",  # hidden-state index: middle (num_layers // 2, as XTREME) | last | 0..num_layers
            tsv_dir="",  # folder of en-<lang>.tsv files ('' = the shipped sample's parallel/ folder)
            tsv="",  # one TSV file instead (its language from the name en-<lang>.tsv, else 'xx')
            languages="",  # '' = every en-<lang>.tsv found
            max_pairs=1000,  # per language; 0 = all (XTREME's Tatoeba uses 1000)
        )
    )
    c.pool = ml_collections.ConfigDict(
        dict(
            text_dir="",  # folder of <lang>.txt ('' = the shipped sample's mono/); its last 10 % lines are used
            languages="",  # '' = every language of text_dir / the sample
            max_sentences=200,  # validation lines per language
            shuffles=200,  # label shuffles per AMI permutation test (its 99th percentile and p-value)
            bootstrap_resamples=200,  # input resamples per AMI 95 % bootstrap interval
            mantel_permutations=999,  # language relabellings per Mantel test (routing vs script/family)
        )
    )
    c.classification = finetune_config(tfds_train="xtreme_xnli", tfds_test="xnli")
    c.tagging = finetune_config(tfds_train="wikiann", tfds_test="wikiann")
    return c
