"""The kinds of `data.source`, one module per family of kinds, each holding everything that depends on the kind.

A source module names the kinds it serves (`NAMES`) and answers, for a config of one of them: which fields the
kind requires (`check_config`), which languages it has when `data.languages` is empty (`languages`), the
`line_sources.Input` specs of one language (`mono_inputs`), the start-up checks that need no corpus read
(`preflight`) and where a run's held-out plain text lies for the pool report (`heldout_text_dir`). Nothing
outside this package asks which kind a config names, so a new kind is its module, its line in `MODULES` and its
test. Modules here import neither TensorFlow nor `data_pipelines.config` at import time (the config lists the
kinds from `REGISTRY`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from data_pipelines.sources import local_files, shipped_sample, tfds_corpora, tfrecord_files

if TYPE_CHECKING:
    from data_pipelines.config import DataConfig
    from data_pipelines.line_sources import Input


class Source(Protocol):
    """What a source module provides (a module satisfies it; so does a namespace in a test)."""

    NAMES: tuple[str, ...]

    def check_config(self, values: Mapping) -> tuple[str, str] | None:
        """The first `(field, why)` the kind rejects in raw `config.data` values, or None."""

    def languages(self, cfg: DataConfig) -> list[str]:
        """Every language the source has, for an empty `data.languages` ([] when it cannot list them)."""

    def mono_inputs(self, cfg: DataConfig, lang: str) -> list[Input]:
        """One `Input` per split of language `lang`, with all its reader needs."""

    def preflight(self, cfg: DataConfig) -> None:
        """Checks before anything compiles, without reading a corpus; raises `data_checks.DataPreflightError`."""

    def heldout_text_dir(self, cfg: DataConfig) -> str | None:
        """The folder of plain `<lang>.txt` whose held-out lines the pool report reads ('' = the shipped
        sample), or None when the source has none."""


# In this order the kinds are listed (`names()`, the config's error for an unknown kind).
MODULES: tuple[Source, ...] = (shipped_sample, local_files, tfrecord_files, tfds_corpora)


def _registry(modules: tuple[Source, ...]) -> dict[str, Source]:
    registry: dict[str, Source] = {}
    for module in modules:
        for kind in module.NAMES:
            if kind in registry:
                raise ValueError(f"data source {kind!r} is served by two modules: {registry[kind]} and {module}")
            registry[kind] = module
    return registry


REGISTRY: dict[str, Source] = _registry(MODULES)


def names() -> tuple[str, ...]:
    """The registered kinds, in `MODULES` order."""
    return tuple(REGISTRY)


def get(kind: str) -> Source:
    """The module serving `kind`; a ValueError names an unknown kind and the known ones."""
    try:
        return REGISTRY[kind]
    except KeyError:
        raise ValueError(f"unknown data source {kind!r} (known: {', '.join(REGISTRY)})") from None
