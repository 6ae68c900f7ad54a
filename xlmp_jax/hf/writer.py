"""Writes a checkpoint as a transformers ``XLMRobertaForMaskedLM`` directory (safetensors), the pool beside it.

The directory's layout is ``hf.layout``'s; weight names come from ``hf.names`` (one name map for both
directions). The CLI around ``export`` is ``python -m xlmp_jax.export``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from typing import Any

import numpy as np
from safetensors.numpy import save_file

from xlmp_jax.hf import names
from xlmp_jax.hf.layout import (
    POOL_CONFIG_FILE,
    POOL_WEIGHTS_FILE,
    SPECIAL_TOKENS,
    SPM_FILE,
    WEIGHTS_FILE,
    hf_config_dict,
    pool_config_dict,
)
from xlmp_jax.model.model_config import ModelConfig
from xlmp_jax.training import checkpoint_read


def _check_out_dir(out_dir: str, overwrite: bool) -> None:
    if os.path.exists(out_dir):
        if not os.path.isdir(out_dir):
            raise FileExistsError(f"export destination {out_dir!r} exists and is not a directory")
        if os.listdir(out_dir) and not overwrite:
            raise FileExistsError(f"export destination {out_dir!r} exists and is not empty (pass --overwrite)")


def _write_tokenizer(directory: str, vocab_path: str, max_length: int) -> None:
    """Copies the SentencePiece model and writes the transformers tokenizer files next to it.

    transformers 5's XLMRobertaTokenizer is backed by the `tokenizers` library: ``tokenizer.json`` is made
    here, offline, from the SentencePiece model (transformers' own converter, which needs `sentencepiece`
    and `protobuf`), so loading OUT never has to convert or download anything.
    """
    if not os.path.isfile(vocab_path):
        raise FileNotFoundError(f"SentencePiece model not found: {vocab_path!r} (config.data.vocab_path)")
    from transformers import XLMRobertaTokenizer  # transformers: seconds to import, only when exporting

    shutil.copyfile(vocab_path, os.path.join(directory, SPM_FILE))
    tokenizer = XLMRobertaTokenizer.from_pretrained(directory, local_files_only=True, model_max_length=max_length)
    tokenizer.backend_tokenizer.save(os.path.join(directory, "tokenizer.json"))
    tokenizer_config = {
        "tokenizer_class": "XLMRobertaTokenizer",
        "model_max_length": max_length,
        "add_prefix_space": True,
        "clean_up_tokenization_spaces": False,
        **SPECIAL_TOKENS,
    }
    _write_json(os.path.join(directory, "tokenizer_config.json"), tokenizer_config)
    _write_json(os.path.join(directory, "special_tokens_map.json"), SPECIAL_TOKENS)


def _write_json(path: str, value: Mapping[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2, sort_keys=True)
        f.write("\n")


def _write_files(directory: str, config: ModelConfig, params: Mapping[str, Any], vocab_path: str) -> None:
    from transformers import XLMRobertaConfig  # transformers: seconds to import, only when exporting

    state = names.to_hf_state_dict(params, config)
    for tied in names.TIED_HF_KEYS:  # transformers re-ties these on load; saving them too is "unexpected"
        state.pop(tied)
    save_file(state, os.path.join(directory, WEIGHTS_FILE), metadata={"format": "pt"})
    XLMRobertaConfig(**hf_config_dict(config)).to_json_file(os.path.join(directory, "config.json"))
    if config.pool is not None:
        pool = {
            name: np.ascontiguousarray(np.asarray(params["pool"][name], np.float32)) for name in ("keys", "prompts")
        }
        save_file(pool, os.path.join(directory, POOL_WEIGHTS_FILE), metadata={"format": "pt"})
        _write_json(os.path.join(directory, POOL_CONFIG_FILE), pool_config_dict(config))
    _write_tokenizer(directory, vocab_path, config.max_length)


def export_params(
    config: ModelConfig, params: Mapping[str, Any], out_dir: str, vocab_path: str, *, overwrite: bool = False
) -> str:
    """Writes ``params`` (unboxed, NumPy or JAX) as a transformers XLM-R directory at ``out_dir``; returns it.

    Atomic: everything is written into a temporary sibling directory that is renamed into place at the
    end, so an interrupted export never leaves a half-written OUT.
    """
    out_dir = os.path.abspath(out_dir)
    _check_out_dir(out_dir, overwrite)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.tmp-", dir=parent)
    try:
        _write_files(tmp, config, params, vocab_path)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private
        if os.path.exists(out_dir):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.old-", dir=parent)
            os.rename(out_dir, os.path.join(old, "out"))
            os.rename(tmp, out_dir)
            shutil.rmtree(old)
        else:
            os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def export(path: str, out_dir: str, step: int | None = None, overwrite: bool = False) -> str:
    """Exports the checkpoint at ``path`` (work directory: latest step or ``step``; or a step directory)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no work directory or checkpoint at {path!r}")
    _check_out_dir(os.path.abspath(out_dir), overwrite)  # fail before the (slow) checkpoint read
    run_config, params, _ = checkpoint_read.load_params(path, step)
    model_config = ModelConfig.from_dict(run_config.model)
    return export_params(model_config, params, out_dir, run_config.data.vocab_path, overwrite=overwrite)
