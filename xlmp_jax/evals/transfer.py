"""The sweep side of the zero-shot transfer evals (``classification``, ``tagging``, ``pos``): their settings block,
which source their examples come from (TFDS, local files or the shipped sample: read by ``transfer_data``)
and the run both share; the fine-tuning itself is ``finetune``.

English dev data (for choosing the checkpoint, ``selection``): TFDS's ``tfds_dev_split`` of ``tfds_dev``
(default: the test dataset) in English; locally a ``dev.tsv`` / ``dev.conll`` / ``dev.conllu`` next to the
training file. Where there is none (the sample-derived tasks, a local folder without a dev file), the last
``dev_fraction`` of the English training examples is held out of training and used as dev. ``seeds``
fine-tuning seeds are separate sweep cells (``evaluate``), each seeding head, batch order and dropout."""

from __future__ import annotations

import dataclasses
import os

import ml_collections

from data_pipelines import sample
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
            tfds_dev="",  # English dev set for checkpoint selection; '' = tfds_test
            tfds_dev_split="validation",
            dev_fraction=0.1,  # no dev set (sample, local without dev.*): this tail of train is held out; 0 = none
            eval_every=50,  # score English dev every this many fine-tuning steps (and after the last)
            seeds=3,  # fine-tuning seeds (sweep seed, +1, ...): one sweep cell each
            devices=0,  # data-parallel devices; 0 = the most local devices that divide batch_size; 1 = one
            shard_params=False,  # FSDP over those devices (params and Adam moments split): for large on small chips
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
        wanted = split_list(s.languages) or sample.parallel_languages()
        train = transfer_data.tfds_examples(s.tfds_train, s.tfds_train_split, "en", s.data_dir, kind, s.max_train)
        tests = {
            lang: transfer_data.tfds_examples(s.tfds_test, s.tfds_test_split, lang, s.data_dir, kind, s.max_test)
            for lang in wanted
        }
        return train, tests
    if source == "sample":  # train: English of the training pairs; tests: the held-out pairs' other side
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


def dev_data(
    kind: str, s: ml_collections.ConfigDict, train: list[transfer_data.Example], name: str = ""
) -> tuple[list[transfer_data.Example], list[transfer_data.Example]]:
    """(training examples, English dev examples): the source's own dev set, else a held-out tail of ``train``
    (``dev_fraction``; 0 = no dev: the last step is scored)."""
    name = name or kind
    source = s.source
    if source == "auto":
        source = "tfds" if s.data_dir else "local" if s.local_dir else "sample"
    if source == "tfds":
        dataset = s.get("tfds_dev") or s.tfds_test
        return train, transfer_data.tfds_examples(dataset, s.tfds_dev_split, "en", s.data_dir, kind, s.max_test)
    if source == "local":
        reader = transfer_data.read_classification_tsv if kind == "classification" else transfer_data.read_tagging
        ext = os.path.splitext(transfer_data.local_files(s.local_dir, kind)[0])[1]
        path = os.path.join(s.local_dir, f"dev{ext}")
        if os.path.isfile(path):
            return train, reader(path, s.max_test)
    fraction = s.get("dev_fraction", 0.0)
    if not 0 <= fraction < 1:
        raise ValueError(f"{name}.dev_fraction={fraction} is not in [0, 1)")
    held = int(round(len(train) * fraction))
    if fraction and held == 0:
        held = 1
    if held >= len(train):
        raise ValueError(f"{name}.dev_fraction={fraction} leaves no training example of {len(train)}")
    return (train[: len(train) - held], train[len(train) - held :]) if held else (train, [])


def settings_of(cfg: ml_collections.ConfigDict, seed: int) -> finetune.FinetuneSettings:
    """The ``FinetuneSettings`` of an eval block (fields it lacks keep their defaults) with this seed."""
    fields = [f.name for f in dataclasses.fields(finetune.FinetuneSettings) if f.name != "seed"]
    return finetune.FinetuneSettings(**{f: cfg[f] for f in fields if f in cfg}, seed=seed)


def run(kind: str, ctx: EvalContext, cfg: ml_collections.ConfigDict, name: str = "") -> list[Row]:
    """Fine-tunes a copy of the checkpoint on English ``kind`` data with the cell's fine-tuning seed,
    selects on English dev; rows per test language (``name``: the eval's, for messages)."""
    train, tests = finetune_data(kind, cfg, ctx.sweep.seed, name)  # the data does not move with the seed
    train, dev = dev_data(kind, cfg, train, name)
    seed = ctx.sweep.seed if ctx.seed is None else ctx.seed
    rows, _ = finetune.zero_shot_eval(ctx.encoder, ctx.tokenizer, kind, train, tests, settings_of(cfg, seed), dev)
    return rows
