"""The sweep's ``pool`` eval: does the prompt pool cluster held-out lines by language (``pool_analysis``)?

``run`` with the settings block ``config()``; ``report`` turns its rows into the few console lines the trainer
prints after a run (``train.pool_report``). Not the pool itself: that is ``xlmp_jax.model.prompt_pool``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import ml_collections

from xlmp_jax.evals import pool_analysis
from xlmp_jax.evals.context import EvalContext, Row, split_list
from xlmp_jax.evals.heldout import text_languages, transfer_dev_languages, transfer_dev_texts, validation_texts
from xlmp_jax.hf.encoder import Encoder
from xlmp_jax.training.state import initial_params

NAME = "pool"


def config() -> ml_collections.ConfigDict:
    """The sweep config's ``pool`` block."""
    return ml_collections.ConfigDict(
        dict(
            text="validation",  # validation (the last 10 % of each language's lines) | transfer_dev (dev strings)
            text_dir="",  # folder of <lang>.txt ('' = the shipped sample's mono/); its last 10 % lines are used
            languages="",  # '' = every language of text_dir / the sample
            max_sentences=200,  # validation lines per language
            shuffles=200,  # label shuffles per AMI permutation test (its 99th percentile and p-value)
            bootstrap_resamples=200,  # input resamples per AMI 95 % bootstrap interval
            mantel_permutations=999,  # language relabellings per Mantel test (routing vs script/family)
            # k of the pool-size references (k-means, random keys) for a model without a pool (0 = none); a
            # pool's own size wins. Set it to the paired XLM-P's pool size to compare the arms at one k.
            reference_pool_size=0,
            step0=True,  # the pool at step 0 as a reference: its params rebuilt from the run's config and seed
        )
    )


TEXTS = ("validation", "transfer_dev")


def check(block: ml_collections.ConfigDict, name: str) -> None:
    """Refuses an unknown ``text`` before the sweep reads any checkpoint."""
    if block.get("text", "validation") not in TEXTS:
        raise ValueError(f"{name}.text={block.text!r} is not one of {TEXTS}")


def run(ctx: EvalContext, cfg: ml_collections.ConfigDict) -> list[Row]:
    """Pool-clustering rows of one checkpoint; its plots go under ``ctx.artifact_dir``."""
    texts = pool_texts(cfg)
    title = f"{os.path.basename(os.path.normpath(ctx.workdir))} step {ctx.step} ({ctx.encoder.model_type})"
    repeats = pool_analysis.Repeats(cfg.shuffles, cfg.bootstrap_resamples, cfg.mantel_permutations)
    initial = initial_encoder(ctx) if cfg.step0 else None
    return pool_analysis.pool_eval(
        ctx.encoder, ctx.tokenizer, texts, ctx.artifact_dir, title=title, seed=ctx.sweep.seed, repeats=repeats,
        initial=initial, pool_size=cfg.reference_pool_size,
    )  # fmt: skip


def pool_texts(cfg: ml_collections.ConfigDict) -> dict[str, list[str]]:
    """The sentences the pool eval clusters, by language (``text``: validation lines or transfer dev strings)."""
    if cfg.text == "validation":
        return validation_texts(text_languages(cfg.languages, cfg.text_dir), cfg.max_sentences, cfg.text_dir)
    if cfg.text == "transfer_dev":
        if cfg.text_dir:
            raise ValueError(f"pool.text='transfer_dev' reads the shipped sample; pool.text_dir={cfg.text_dir!r}")
        return transfer_dev_texts(split_list(cfg.languages) or transfer_dev_languages(), cfg.max_sentences)
    raise ValueError(f"pool.text={cfg.text!r} is not 'validation' or 'transfer_dev'")


def initial_encoder(ctx: EvalContext) -> Encoder | None:
    """The checkpoint's model at step 0, rebuilt from its config and ``train.seed`` (``state.initial_params``;
    no step-0 checkpoint is needed). None without a pool, without a recorded seed, or for a run that started
    from imported weights (``init_from_hf``), whose step 0 is not a random draw."""
    train = ctx.run_config.get("train") or {}
    if not ctx.encoder.has_pool or train.get("seed") is None or ctx.run_config.get("init_from_hf"):
        return None
    params = initial_params(ctx.encoder.config, int(train["seed"]))
    return Encoder(ctx.encoder.config, params, ctx.encoder.batch_size, ctx.encoder.max_length)


# The references the console report names (``pool_references``), by row stem.
REFERENCES = (
    ("script", "script alone"),
    ("tfidf_klang", "TF-IDF k-means"),
    ("kmeans_query_klang", "query k-means"),
    ("random_keys", "random keys"),
    ("step0_prompt", "step 0"),
)


def report(rows: Mapping[tuple[str, str], float], languages: Sequence[str], plots: str) -> str:
    """What a run's pool learned, as a few console lines, from the pool eval's ``{(language, metric): value}``
    (with the chance control); ``plots`` is where its heatmap and dendrogram are."""

    def get(key: tuple[str, str]) -> float:
        return rows.get(key, float("nan"))

    ami = "ami_prompt_language"
    top = ", ".join(f"{lang} {int(get((lang, 'top_prompt')))}" for lang in languages if (lang, "top_prompt") in rows)
    return "\n".join(
        [
            f"what the pool learned (held-out lines of {len(languages)} languages):",
            f"  AMI(top prompt, language) = {get(('all', ami)):.3f}; shuffled languages: 99th percentile "
            f"{get(('all', ami + '_shuffled_p99')):.3f}, p = {get(('all', ami + '_p_value')):.3g}; "
            f"vs script {get(('all', 'ami_prompt_script')):.3f}",
            "  the same sentences, no learned pool: "
            + "; ".join(
                f"{label} {get(('all', f'ami_{stem}_language')):.3f}"
                for stem, label in REFERENCES
                if ("all", f"ami_{stem}_language") in rows
            ),
            f"  prompts in use: {get(('all', 'effective_prompts')):.1f} effective; "
            f"{100 * get(('all', 'pool_fraction_top')):.0f} % of the pool is some input's top prompt",
            f"  top prompt per language: {top}",
            f"  plots (routing heatmap, language dendrogram): {plots}",
        ]
    )
