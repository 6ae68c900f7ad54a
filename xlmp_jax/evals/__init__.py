"""Evaluations of XLM-P / XLM-R checkpoints, run over many checkpoints by ``xlmp_jax.evaluate``.

Modules: ``encoder`` (jitted forward passes + tokenisation shared by all evals), ``mlm`` (per-language
masked-LM loss/accuracy), ``retrieval`` (XTREME Tatoeba-style sentence retrieval), ``pool_analysis``
(soft language clustering of the prompt pool), ``finetune`` (zero-shot cross-lingual transfer on
classification and tagging), ``results`` (the tidy result table, summary, plots, TensorBoard).
"""
