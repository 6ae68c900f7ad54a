"""XTREME sweep: every task on every listed work directory (XLM-P runs and their baseline runs, one per
pre-training seed each), ``summary.md`` in XTREME's layout (``xlmp_jax/evals/xtreme_summary.py``).

    python -m xlmp_jax.evaluate --config=configs/xtreme.py \
        --config.workdirs=runs/xlmp_s0,runs/xlmp_s1,runs/base_s0,runs/base_s1 --config.out=evals/xtreme

List each arm's work directories in pre-training seed order: the i-th XLM-P run pairs with the i-th baseline
run for the XLM-P - baseline interval. Each (work directory, task, fine-tuning seed) is one cell of
``OUT/cells.jsonl``, saved when it finishes: rerunning the same command after an interruption computes
only what is missing. Data: each task's block (``--config.xnli.data_dir=...``, ``--config.ner.local_dir=...``,
``--config.tatoeba.dir=...``, ``--config.bucc.dir=...``, ``--config.xquad.dir=...`` or ``.data_dir=...``, the same
for ``mlqa`` and ``tydiqa``); README's Evaluation section says how to prepare it. XQuAD-en and TyDiQA-en (English
dev data) are shown flagged and left out of their task's mean.
"""

import ml_collections

from configs import eval_sweep
from xlmp_jax import evals

# (task, registry module, overrides of that module's config, headline metric), in XTREME's column order.
TASKS = (
    ("xnli", "classification", dict(tfds_train="xtreme_xnli", tfds_test="xnli"), "accuracy"),
    (
        "pawsx",
        "classification",
        dict(tfds_train="paws_x_wiki", tfds_test="paws_x_wiki"),
        "accuracy",
    ),
    ("pos", "pos", {}, "accuracy"),
    ("ner", "tagging", dict(tfds_train="wikiann", tfds_test="wikiann"), "f1"),
    ("xquad", "xquad", {}, "f1"),  # F1 at the English-dev-best step; EM in the per-language rows
    ("mlqa", "mlqa", {}, "f1"),
    ("tydiqa", "tydiqa", {}, "f1"),
    ("bucc", "bucc", {}, "f1"),
    ("tatoeba", "tatoeba", {}, "acc_mean"),
    ("retrieval", "retrieval", {}, "acc_mean"),
)


def get_config() -> ml_collections.ConfigDict:
    c = eval_sweep.get_config()
    for name in evals.REGISTRY:  # the generic blocks give way to the task blocks below
        del c[name]
    c.steps = "latest"  # the end of pre-training of each work directory
    c.evals = ",".join(task for task, *_ in TASKS)
    c.summary_layout = "xtreme"
    c.headline = ",".join(f"{task}:{metric}" for task, _, _, metric in TASKS)  # the metric of each column
    for task, module, overrides, _ in TASKS:
        block = evals.load(module).config()
        block.update(overrides)
        block.module = module
        c[task] = block
    return c
