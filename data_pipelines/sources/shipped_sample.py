"""`sample`: the corpus shipped in `data_pipelines/sample/` (its languages, read by the sample reader)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from data_pipelines.line_sources import SPLITS, Input

if TYPE_CHECKING:
    from data_pipelines.config import DataConfig

NAMES = ("sample",)


def check_config(values: Mapping) -> tuple[str, str] | None:
    """Every field may stay at its default: the sample needs no path and has every language listed."""
    return None


def languages(cfg: DataConfig) -> list[str]:
    from data_pipelines import sample

    return list(sample.languages())


def mono_inputs(cfg: DataConfig, lang: str) -> list[Input]:
    """The `sample` reader of `lang`: its spec holds the language only, the held-out rule is `sample`'s."""
    from data_pipelines import sample

    if lang not in sample.languages():
        raise ValueError(f"data.languages entry {lang!r} is not in the sample (has: {sample.languages()})")
    return [Input(entry=lang, kind="lines", split=s, reader="sample", paths=(lang,)) for s in SPLITS]


def preflight(cfg: DataConfig) -> None:
    """Every language of `data.languages` is one the sample has."""
    from data_pipelines import sample
    from data_pipelines.data_checks import DataPreflightError

    have = sample.languages()
    bad = [lang for lang in cfg.languages if lang not in have]
    if bad:
        raise DataPreflightError(f"data.languages entry {bad[0]!r} is not in the sample (has: {have})")


def heldout_text_dir(cfg: DataConfig) -> str | None:
    return ""
