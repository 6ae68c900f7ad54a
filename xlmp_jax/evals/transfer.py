"""The sweep side of the zero-shot transfer evals (``classification``, ``tagging``, ``pos``): their settings block,
which source their examples come from (TFDS, local files or the shipped sample: read by ``transfer_data``)
and the run both share; the fine-tuning itself is ``finetune``."""

from __future__ import annotations

import dataclasses

import ml_collections

from xlmp_jax.evals import finetune, transfer_data
from xlmp_jax.evals.context import EvalContext, Row, split_list


def config(**overrides) -> ml_collections.ConfigDict:
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
            local_dir="",  # train.tsv + test-<lang>.tsv (classification) / train.conll[u] + test-<lang>.conll[u]
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


def finetune_data(
    kind: str, s: ml_collections.ConfigDict, seed: int, name: str = ""
) -> tuple[list[transfer_data.Example], dict[str, list[transfer_data.Example]]]:
    """(English training examples, {language: test examples}) from TFDS, local files or the sample.

    ``name``: the eval's name in error messages (its settings block), ``kind`` when not given."""
    name = name or kind
    source = s.source
    if source == "auto":
        source = "tfds" if s.data_dir else "local" if s.local_dir else "sample"
    reader = transfer_data.read_classification_tsv if kind == "classification" else transfer_data.read_tagging
    if source == "local":
        train_path, test_paths = transfer_data.local_files(s.local_dir, kind)
        wanted = split_list(s.languages) or sorted(test_paths)
        missing = [lang for lang in wanted if lang not in test_paths]
        if missing:
            raise ValueError(f"{name}: no test-{missing[0]} file in {s.local_dir!r} (have: {sorted(test_paths)})")
        return reader(train_path, s.max_train), {lang: reader(test_paths[lang], s.max_test) for lang in wanted}
    if source == "tfds":
        if not (s.tfds_train and s.tfds_test):
            raise ValueError(f"{name}.source='tfds' needs {name}.tfds_train and {name}.tfds_test")
        from data_pipelines import sample

        wanted = split_list(s.languages) or sample.parallel_languages()
        train = transfer_data.tfds_examples(s.tfds_train, s.tfds_train_split, "en", s.data_dir, kind, s.max_train)
        tests = {
            lang: transfer_data.tfds_examples(s.tfds_test, s.tfds_test_split, lang, s.data_dir, kind, s.max_test)
            for lang in wanted
        }
        return train, tests
    if source == "sample":  # train: English of the training pairs; tests: the held-out pairs' other side
        from data_pipelines import sample

        wanted = split_list(s.languages) or sample.parallel_languages()
        english, tests = [], {}
        for lang in wanted:
            english += [en.strip() for en, _ in sample.read_parallel(lang, "train")]
            tests[lang] = [other.strip() for _, other in sample.read_parallel(lang, "validation")][: s.max_test or None]
        english = list(dict.fromkeys(english))[: s.max_train or None]
        if kind == "classification":
            return transfer_data.derived_classification(english, seed), {
                lang: transfer_data.derived_classification(t, seed) for lang, t in tests.items()
            }
        return transfer_data.derived_tagging(english), {
            lang: transfer_data.derived_tagging(t) for lang, t in tests.items()
        }
    raise ValueError(f"{name}.source={s.source!r} is not one of auto, tfds, local, sample")


def run(kind: str, ctx: EvalContext, cfg: ml_collections.ConfigDict, name: str = "") -> list[Row]:
    """Fine-tunes a copy of the checkpoint on English ``kind`` data; rows per test language (``name``: the
    eval's, for messages)."""
    train, tests = finetune_data(kind, cfg, ctx.sweep.seed, name)
    fields = [f.name for f in dataclasses.fields(finetune.FinetuneSettings) if f.name != "seed"]
    settings = finetune.FinetuneSettings(**{name: cfg[name] for name in fields}, seed=ctx.sweep.seed)
    rows, _ = finetune.zero_shot_eval(ctx.encoder, ctx.tokenizer, kind, train, tests, settings)
    return rows
