"""`text`, `cc100` and `jsonl`: a folder of `<lang>.<ext>` files (or a `{lang}` pattern), local or gs://.

`text` and `cc100` read plain lines (`.txt`, `.txt.gz`, `.txt.xz`), `jsonl` the text under `data.text_field`
of each JSON line; the readers' held-out rule (the last 10 % of each file) is `line_sources`'.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from data_pipelines.line_sources import SPLITS, Input, glob_files, is_dir

if TYPE_CHECKING:
    from data_pipelines.config import DataConfig

NAMES = ("text", "cc100", "jsonl")
TEXT_EXTENSIONS = (".txt", ".txt.gz", ".txt.xz")
JSONL_EXTENSIONS = (".jsonl", ".jsonl.gz", ".jsonl.xz")


def extensions(source: str) -> tuple[str, ...]:
    """The endings of a `<lang>` file of kind `source`, in the order they are looked for."""
    return JSONL_EXTENSIONS if source == "jsonl" else TEXT_EXTENSIONS


def check_path(values: Mapping) -> tuple[str, str] | None:
    """A file source needs `data.path` (shared with `tfrecord_files`)."""
    if not values["path"]:
        return "path", f"source {values['source']!r} needs a folder or a {{lang}} file pattern"
    return None


check_config = check_path


def check_folder(path: str) -> None:
    """`data.path` without `{lang}` must be a folder (the readers' error)."""
    if not is_dir(path):
        raise FileNotFoundError(f"data.path={path!r} does not exist (or is not a folder)")


def languages(cfg: DataConfig) -> list[str]:
    """The `<lang>` of every file of the folder with one of the kind's endings ([] for a `{lang}` pattern)."""
    if "{lang}" in cfg.path:
        return []
    check_folder(cfg.path)
    names = [os.path.basename(p) for p in glob_files(os.path.join(cfg.path, "*"))]
    return sorted({n[: -len(e)] for n in names for e in extensions(cfg.source) if n.endswith(e)})


def files(cfg: DataConfig, lang: str) -> list[str]:
    """Files of `lang` under `data.path`: the `{lang}` pattern's matches, or the folder's first ending found."""
    if "{lang}" in cfg.path:
        found = glob_files(cfg.path.replace("{lang}", lang))
        if not found:
            raise FileNotFoundError(
                f"no file for data.languages entry {lang!r} (data.path={cfg.path!r}): nothing matches "
                f"{cfg.path.replace('{lang}', lang)!r}"
            )
        return found
    check_folder(cfg.path)
    exts = extensions(cfg.source)
    for ext in exts:
        found = glob_files(os.path.join(cfg.path, f"{lang}{ext}"))
        if found:
            return found
    raise FileNotFoundError(
        f"data.languages entry {lang!r}: no {'/'.join(lang + e for e in exts)} in data.path={cfg.path!r}"
    )


def mono_inputs(cfg: DataConfig, lang: str) -> list[Input]:
    paths = tuple(files(cfg, lang))
    if cfg.source == "jsonl":
        return [
            Input(entry=lang, kind="lines", split=s, reader="jsonl", paths=paths, field=cfg.text_field) for s in SPLITS
        ]
    return [Input(entry=lang, kind="lines", split=s, reader="text", paths=paths) for s in SPLITS]


# ----------------------------------------------------------------------------------------------------------------
# Start-up checks: local paths only (gs:// is the readers' to check), with the preflight's own messages


def preflight_languages(cfg: DataConfig) -> list[str]:
    """`data.languages`, or those the folder holds; an empty folder fails here rather than as an empty mixture."""
    from data_pipelines.data_checks import DataPreflightError

    if cfg.languages:
        return list(cfg.languages)
    if "{lang}" in cfg.path:
        return []
    exts = extensions(cfg.source)
    langs = {n[: -len(e)] for n in os.listdir(cfg.path) for e in exts if n.endswith(e)}
    if not langs:
        raise DataPreflightError(
            f"data.path={cfg.path!r} holds no <lang>{'/<lang>'.join(exts)} file for data.source={cfg.source!r}"
        )
    return sorted(langs)


def preflight_files(cfg: DataConfig, lang: str) -> list[str]:
    """The local files of `lang`, by the readers' rule (`files`)."""
    from data_pipelines.data_checks import DataPreflightError

    if "{lang}" in cfg.path:
        pattern = cfg.path.replace("{lang}", lang)
        found = sorted(glob.glob(pattern))
        if not found:
            raise DataPreflightError(
                f"data.languages entry {lang!r}: nothing matches {pattern!r} (data.path={cfg.path!r})"
            )
        return found
    exts = extensions(cfg.source)
    for ext in exts:
        found = sorted(glob.glob(os.path.join(glob.escape(cfg.path), lang + ext)))
        if found:
            return found
    raise DataPreflightError(
        f"data.languages entry {lang!r}: no {'/'.join(lang + e for e in exts)} in data.path={cfg.path!r}"
    )


def preflight(cfg: DataConfig) -> None:
    """Each language's files exist, are not empty, and start with a UTF-8 line (jsonl: a JSON object with
    `data.text_field`)."""
    from data_pipelines import data_checks as checks

    if not checks.local_data_path(cfg.path):
        return
    for lang in preflight_languages(cfg):
        for f in preflight_files(cfg, lang):
            if cfg.source == "jsonl":
                checks.check_jsonl_file(f, cfg.text_field)
            else:
                checks.check_text_file(f)


def heldout_text_dir(cfg: DataConfig) -> str | None:
    """A local `text` folder: the pool report reads its plain `<lang>.txt` files."""
    return cfg.path if cfg.source == "text" and os.path.isdir(cfg.path) else None
