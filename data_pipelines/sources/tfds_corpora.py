"""`mc4` and `wiki40b`: TFDS datasets already prepared in `data.tfds_data_dir` (nothing is downloaded).

mC4 is one dataset with splits `<lang>` / `<lang>-validation`; Wiki-40B one config per language with splits
`train` / `validation`, its structure markers removed by the reader. Neither lists its languages: the config
names them. n_l counts documents.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from data_pipelines.line_sources import SPLITS, Input

if TYPE_CHECKING:
    from data_pipelines.config import DataConfig

NAMES = ("mc4", "wiki40b")


def check_config(values: Mapping) -> tuple[str, str] | None:
    if not values["languages"]:
        return "languages", f"source {values['source']!r} needs an explicit list of languages"
    return None


def languages(cfg: DataConfig) -> list[str]:
    return []


def mono_inputs(cfg: DataConfig, lang: str) -> list[Input]:
    wiki40b = cfg.source == "wiki40b"
    if wiki40b:
        name, splits = cfg.wiki40b_tfds_name.replace("{lang}", lang), {"train": "train", "validation": "validation"}
    else:
        name, splits = cfg.mc4_tfds_name, {"train": lang, "validation": f"{lang}-validation"}
    return [
        Input(entry=lang, kind="lines", split=s, reader="tfds", tfds_name=name, tfds_split=splits[s],
              tfds_data_dir=cfg.tfds_data_dir, wiki40b=wiki40b)
        for s in SPLITS
    ]  # fmt: skip


def preflight(cfg: DataConfig) -> None:
    """Each TFDS name is one TFDS knows, with that config (its local registry, no network)."""
    from data_pipelines.data_checks import check_tfds_name

    if cfg.source == "mc4":
        check_tfds_name(cfg.mc4_tfds_name, "data.mc4_tfds_name")
    else:
        for lang in cfg.languages:
            check_tfds_name(cfg.wiki40b_tfds_name.replace("{lang}", lang), "data.wiki40b_tfds_name")


def heldout_text_dir(cfg: DataConfig) -> str | None:
    return None
