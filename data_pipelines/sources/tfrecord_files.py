"""`tfrecord`: `tf.train.Example` files per language and split, text in the bytes feature `data.text_field`.

Files are `<lang>-<split>.tfrecord*` in the `data.path` folder, or a pattern with `{lang}` and `{split}`; a
language needs train files, its validation files may be absent. n_l counts documents (records).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from data_pipelines.line_sources import SPLITS, Input, glob_files
from data_pipelines.sources.local_files import check_folder, check_path

if TYPE_CHECKING:
    from data_pipelines.config import DataConfig

NAMES = ("tfrecord",)


def check_config(values: Mapping) -> tuple[str, str] | None:
    return check_path(values)


def languages(cfg: DataConfig) -> list[str]:
    """The `<lang>` of every `<lang>-train.tfrecord*` of the folder ([] for a `{lang}` pattern)."""
    if "{lang}" in cfg.path:
        return []
    check_folder(cfg.path)
    names = [os.path.basename(p) for p in glob_files(os.path.join(cfg.path, "*"))]
    return sorted({n.split("-train.tfrecord")[0] for n in names if "-train.tfrecord" in n})


def pattern(cfg: DataConfig, lang: str, split: str) -> str:
    """The glob of `lang`'s `split` files."""
    if "{lang}" in cfg.path:
        return cfg.path.replace("{lang}", lang).replace("{split}", split)
    return os.path.join(cfg.path, f"{lang}-{split}.tfrecord*")


def mono_inputs(cfg: DataConfig, lang: str) -> list[Input]:
    out = []
    for s in SPLITS:
        if "{lang}" not in cfg.path:
            check_folder(cfg.path)
        files = glob_files(pattern(cfg, lang, s))
        if not files and s == "train":
            raise FileNotFoundError(
                f"no file for data.languages entry {lang!r} (data.path={cfg.path!r}): nothing matches "
                f"{pattern(cfg, lang, s)!r}"
            )
        out.append(
            Input(entry=lang, kind="lines", split=s, reader="tfrecord", paths=tuple(files), field=cfg.text_field)
        )
    return out


def preflight(cfg: DataConfig) -> None:
    """The train files of each listed language exist and are not empty (records are the reader's to check)."""
    from data_pipelines import data_checks as checks

    if not checks.local_data_path(cfg.path):
        return
    for lang in cfg.languages:
        train = pattern(cfg, lang, "train")
        files = sorted(glob.glob(train))
        if not files:
            raise checks.DataPreflightError(f"data.languages entry {lang!r}: nothing matches {train!r}")
        for f in files:
            if os.path.getsize(f) == 0:
                raise checks.DataPreflightError(f"{f}: the file is empty")


def heldout_text_dir(cfg: DataConfig) -> str | None:
    return None
