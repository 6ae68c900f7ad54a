"""Reading transformers directories into our params, and ``load_pretrained``.

    model = xlmp_jax.load_pretrained("workdirs/tiny")        # work dir (latest step), step dir or export dir
    ids, mask = model.tokenize(["Hello world.", "Hallo Welt."])
    logits = model.logits(ids, mask)                         # NumPy [2, T, vocab], input tokens only
    vectors = model.encode(["Hello world.", "Hallo Welt."])  # NumPy [2, hidden], mean-pooled middle layer

``load_hf_params`` serves ``config.init_from_hf`` (continued pre-training from an XLM-R directory);
``load_pretrained`` returns an ``hf.encoder.Encoder``, the inference encoder the evals use too.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from safetensors.numpy import load_file

from data_pipelines.vocab import XLMRVocabulary
from xlmp_jax.hf import layout, names
from xlmp_jax.hf.encoder import Encoder
from xlmp_jax.model.model_config import ModelConfig
from xlmp_jax.model.prompt_pool import PoolConfig
from xlmp_jax.model.xlmp import init_params


def _read_hf_state(hf_dir: str) -> dict[str, np.ndarray]:
    single = os.path.join(hf_dir, layout.WEIGHTS_FILE)
    index = os.path.join(hf_dir, "model.safetensors.index.json")
    if os.path.isfile(single):
        state = load_file(single)
    elif os.path.isfile(index):
        with open(index, encoding="utf-8") as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        state = {}
        for shard in shards:
            state.update(load_file(os.path.join(hf_dir, shard)))
    elif os.path.isfile(os.path.join(hf_dir, "pytorch_model.bin")):
        import torch  # only for legacy .bin checkpoints

        raw = torch.load(os.path.join(hf_dir, "pytorch_model.bin"), map_location="cpu", weights_only=True)
        state = {k: v.float().numpy() for k, v in raw.items()}
    else:
        raise FileNotFoundError(
            f"{hf_dir!r} has no {layout.WEIGHTS_FILE}, sharded safetensors index or pytorch_model.bin"
        )
    for tied, source in names.TIED_HF_KEYS.items():  # some files keep only one side of a tie
        if source not in state and tied in state:
            state[source] = state[tied]
    return state


def fresh_pool_params(config: ModelConfig, rng) -> dict[str, np.ndarray]:
    """The pool part of ``init_params(config, rng)``; jitted so XLA never materialises the rest."""
    pool = jax.jit(lambda r: nn.unbox(init_params(config, r)["params"]["pool"]))(rng)
    return {k: np.asarray(v) for k, v in pool.items()}


def load_hf_params(hf_dir: str, model_config: ModelConfig, rng) -> dict:
    """Our params (nested dict of NumPy fp32) from a transformers XLM-R masked-LM directory.

    Used for ``config.init_from_hf`` (continued pre-training). The pool, if ``model_config`` has one, is
    fresh: ``init_params(model_config, rng)``'s values. A directory of another architecture or size is a
    ValueError naming the directory and the field.
    """
    pool = fresh_pool_params(model_config, rng) if model_config.pool is not None else None
    return load_hf_encoder(hf_dir, model_config, pool)


def load_hf_encoder(hf_dir: str, model_config: ModelConfig, pool: Mapping[str, Any] | None) -> dict:
    """``load_hf_params`` with the pool given (``None`` for a baseline config)."""
    hf_dir = str(hf_dir)
    if not os.path.isdir(hf_dir):
        raise FileNotFoundError(f"transformers model directory {hf_dir!r} does not exist")
    layout.check_hf_config(hf_dir, layout.read_hf_config(hf_dir), model_config)
    try:
        return names.from_hf_state_dict(_read_hf_state(hf_dir), model_config, pool_params=pool)
    except ValueError as error:
        raise ValueError(f"{hf_dir!r}: {error}") from None


def load_exported_pool(directory: str, pool: PoolConfig, hidden_size: int) -> dict[str, np.ndarray]:
    """The pool of an export directory; a ValueError naming the file if its shapes do not match ``pool``."""
    path = os.path.join(directory, layout.POOL_WEIGHTS_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{directory!r} has {layout.POOL_CONFIG_FILE} but no {layout.POOL_WEIGHTS_FILE}")
    try:
        arrays = load_file(path)
    except Exception as e:  # noqa: BLE001 -- safetensors raises its own SafetensorError (and OSError)
        raise ValueError(f"{path!r} is not a readable safetensors file ({e}); export the checkpoint again") from None
    want = {"keys": (pool.size, hidden_size), "prompts": (pool.size, pool.length, hidden_size)}
    got = {k: tuple(arrays[k].shape) if k in arrays else None for k in want}
    if got != want:
        raise ValueError(f"{path!r} holds shapes {got}, {layout.POOL_CONFIG_FILE} says {want}")
    return {k: arrays[k].astype(np.float32) for k in want}


def _is_export_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "config.json")) and os.path.isfile(os.path.join(path, "model.safetensors"))


def load_pretrained(path: str, step: int | None = None, *, dtype: str | None = None, batch_size: int = 32) -> Encoder:
    """Loads a work directory (latest step, or ``step``), a checkpoint step directory, or an export directory.

    ``dtype`` overrides the compute dtype (e.g. "float32" for exact CPU numbers after bf16 training).
    """
    path = str(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no work directory, checkpoint or export at {path!r}")
    if _is_export_dir(path) and not os.path.isdir(os.path.join(path, "checkpoints")):
        config = layout.read_exported_config(path)
        pool = None
        if config.pool is not None:
            pool = load_exported_pool(path, config.pool, config.hidden_size)
        params = load_hf_encoder(path, config, pool)
        vocab_path, run_config, loaded_step = os.path.join(path, layout.SPM_FILE), None, None
    else:
        from xlmp_jax.training import checkpoint_read  # Orbax (tensorstore): not on `import xlmp_jax`

        run_config, params, loaded_step = checkpoint_read.load_params(path, step)
        config = ModelConfig.from_dict(run_config.model)
        vocab_path = run_config.data.vocab_path
    if dtype is not None:
        config = dataclasses.replace(config, dtype=dtype)
    tokenizer = XLMRVocabulary(vocab_path)
    if tokenizer.vocab_size != config.vocab_size:
        raise ValueError(
            f"vocabulary {vocab_path!r} has {tokenizer.vocab_size} ids but model.vocab_size={config.vocab_size}"
        )
    return Encoder(
        config,
        params,
        batch_size,
        config.max_length,
        tokenizer=tokenizer,
        run_config=run_config,
        step=loaded_step,
    )
