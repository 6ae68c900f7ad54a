"""Export to / import from `transformers`' ``XLMRobertaForMaskedLM`` (safetensors), with the prompt pool beside it.

An export directory is a plain transformers checkpoint (``config.json``, ``model.safetensors``, the
SentencePiece model and tokenizer files), so ``AutoModelForMaskedLM`` / ``AutoTokenizer.from_pretrained(OUT)``
load it as XLM-R; the pool, which transformers has no slot for, goes into ``prompt_pool.safetensors`` (``keys``
[M, D], ``prompts`` [M, Lp, D]) and ``prompt_pool.json`` (its config), read by ``xlmp_torch.XLMPForMaskedLM``.
Weight names come from ``xlmp_jax.convert`` (one name map for both directions).

CLI: ``python -m xlmp_jax.export --workdir=DIR [--step=N] --out=OUT [--overwrite]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from xlmp_jax import convert
from xlmp_jax.model_config import ModelConfig
from xlmp_jax.pool import PoolConfig

WEIGHTS_FILE = "model.safetensors"
POOL_WEIGHTS_FILE = "prompt_pool.safetensors"
POOL_CONFIG_FILE = "prompt_pool.json"
SPM_FILE = "sentencepiece.bpe.model"  # the name transformers' XLMRobertaTokenizer looks for
POOL_FORMAT = "xlmp-prompt-pool/1"
SPECIAL_TOKENS = {
    "bos_token": "<s>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
    "sep_token": "</s>",
    "pad_token": "<pad>",
    "cls_token": "<s>",
    "mask_token": "<mask>",
}

# (transformers config field, ModelConfig field): what must agree for an import to be exact.
_HF_FIELDS = (
    ("vocab_size", "vocab_size"),
    ("hidden_size", "hidden_size"),
    ("num_hidden_layers", "num_layers"),
    ("num_attention_heads", "num_heads"),
    ("intermediate_size", "intermediate_size"),
    ("max_position_embeddings", "max_position_embeddings"),
    ("type_vocab_size", "type_vocab_size"),
    ("pad_token_id", "pad_token_id"),
    ("layer_norm_eps", "layer_norm_eps"),
)


# -- export ---------------------------------------------------------------------------------------


def hf_config_dict(config: ModelConfig) -> dict[str, Any]:
    """``XLMRobertaConfig`` arguments describing the encoder of ``config``."""
    return dict(
        architectures=["XLMRobertaForMaskedLM"],
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        intermediate_size=config.intermediate_size,
        hidden_act="gelu",  # erf GELU, as ours
        hidden_dropout_prob=config.hidden_dropout,
        attention_probs_dropout_prob=config.attention_dropout,
        max_position_embeddings=config.max_position_embeddings,
        type_vocab_size=config.type_vocab_size,
        initializer_range=config.initializer_range,
        layer_norm_eps=config.layer_norm_eps,
        pad_token_id=config.pad_token_id,
        bos_token_id=0,
        eos_token_id=2,
        tie_word_embeddings=True,
    )


def pool_config_dict(config: ModelConfig) -> dict[str, Any]:
    """What ``prompt_pool.json`` holds: the PoolConfig fields plus the hidden size and a format tag."""
    assert config.pool is not None
    return {"format": POOL_FORMAT, "hidden_size": config.hidden_size, **dataclasses.asdict(config.pool)}


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
    from transformers import XLMRobertaTokenizer

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
    from safetensors.numpy import save_file
    from transformers import XLMRobertaConfig

    state = convert.to_hf_state_dict(params, config)
    for tied in convert.TIED_HF_KEYS:  # transformers re-ties these on load; saving them too is "unexpected"
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
    from xlmp_jax import checkpoint

    if not os.path.exists(path):
        raise FileNotFoundError(f"no work directory or checkpoint at {path!r}")
    _check_out_dir(os.path.abspath(out_dir), overwrite)  # fail before the (slow) checkpoint read
    run_config, params, _ = checkpoint.load_params(path, step)
    model_config = ModelConfig.from_dict(run_config.model)
    return export_params(model_config, params, out_dir, run_config.data.vocab_path, overwrite=overwrite)


# -- import ---------------------------------------------------------------------------------------


def _read_hf_config(hf_dir: str) -> dict[str, Any]:
    path = os.path.join(hf_dir, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{hf_dir!r} is not a transformers model directory: it has no config.json")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def check_hf_config(hf_dir: str, hf: Mapping[str, Any], config: ModelConfig) -> None:
    """Raises a ValueError naming ``hf_dir`` and the first field where it differs from ``config``."""
    model_type = hf.get("model_type")
    if model_type != "xlm-roberta":
        raise ValueError(f"{hf_dir!r} holds model_type={model_type!r}, not 'xlm-roberta' (XLMRobertaForMaskedLM)")
    archs = hf.get("architectures") or []
    if archs and "XLMRobertaForMaskedLM" not in archs:
        raise ValueError(f"{hf_dir!r} holds architectures={archs}, not XLMRobertaForMaskedLM")
    act = hf.get("hidden_act", "gelu")
    if act != "gelu":
        raise ValueError(f"{hf_dir!r} has hidden_act={act!r}; the model computes 'gelu' (erf form)")
    pos = hf.get("position_embedding_type", "absolute")
    if pos != "absolute":
        raise ValueError(f"{hf_dir!r} has position_embedding_type={pos!r}; the model has absolute positions")
    for hf_name, ours in _HF_FIELDS:
        want = getattr(config, ours)
        got = hf.get(hf_name)
        same = got is not None and (np.isclose(got, want) if isinstance(want, float) else got == want)
        if not same:
            raise ValueError(f"{hf_dir!r} has {hf_name}={got!r} but model.{ours}={want!r}")


def _read_hf_state(hf_dir: str) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    single = os.path.join(hf_dir, WEIGHTS_FILE)
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
        raise FileNotFoundError(f"{hf_dir!r} has no {WEIGHTS_FILE}, sharded safetensors index or pytorch_model.bin")
    for tied, source in convert.TIED_HF_KEYS.items():  # some files keep only one side of a tie
        if source not in state and tied in state:
            state[source] = state[tied]
    return state


def fresh_pool_params(config: ModelConfig, rng) -> dict[str, np.ndarray]:
    """The pool part of ``init_params(config, rng)``; jitted so XLA never materialises the rest."""
    import flax.linen as nn
    import jax

    from xlmp_jax.model import init_params

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
    check_hf_config(hf_dir, _read_hf_config(hf_dir), model_config)
    try:
        return convert.from_hf_state_dict(_read_hf_state(hf_dir), model_config, pool_params=pool)
    except ValueError as error:
        raise ValueError(f"{hf_dir!r}: {error}") from None


def load_exported_pool(directory: str, pool: PoolConfig, hidden_size: int) -> dict[str, np.ndarray]:
    """The pool of an export directory; a ValueError naming the file if its shapes do not match ``pool``."""
    from safetensors.numpy import load_file

    path = os.path.join(directory, POOL_WEIGHTS_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{directory!r} has {POOL_CONFIG_FILE} but no {POOL_WEIGHTS_FILE}")
    try:
        arrays = load_file(path)
    except Exception as e:  # noqa: BLE001 -- safetensors raises its own SafetensorError (and OSError)
        raise ValueError(f"{path!r} is not a readable safetensors file ({e}); export the checkpoint again") from None
    want = {"keys": (pool.size, hidden_size), "prompts": (pool.size, pool.length, hidden_size)}
    got = {k: tuple(arrays[k].shape) if k in arrays else None for k in want}
    if got != want:
        raise ValueError(f"{path!r} holds shapes {got}, {POOL_CONFIG_FILE} says {want}")
    return {k: arrays[k].astype(np.float32) for k in want}


def read_exported_config(directory: str) -> ModelConfig:
    """The ModelConfig of an export directory (``config.json`` + ``prompt_pool.json`` if present)."""
    hf = _read_hf_config(directory)
    pool = None
    pool_path = os.path.join(directory, POOL_CONFIG_FILE)
    if os.path.isfile(pool_path):
        with open(pool_path, encoding="utf-8") as f:
            values = json.load(f)
        fields = {f.name for f in dataclasses.fields(PoolConfig)}
        pool = PoolConfig(**{k: v for k, v in values.items() if k in fields})
    return ModelConfig(
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=hf["num_attention_heads"],
        intermediate_size=hf["intermediate_size"],
        max_position_embeddings=hf["max_position_embeddings"],
        type_vocab_size=hf.get("type_vocab_size", 1),
        pad_token_id=hf.get("pad_token_id", 1),
        layer_norm_eps=hf.get("layer_norm_eps", 1e-5),
        hidden_dropout=hf.get("hidden_dropout_prob", 0.1),
        attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
        initializer_range=hf.get("initializer_range", 0.02),
        pool=pool,
    )


# -- CLI ------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m xlmp_jax.export", description="Export a checkpoint to a transformers XLM-R directory."
    )
    parser.add_argument("--workdir", required=True, help="work directory (latest step) or a checkpoint step directory")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")
    args = parser.parse_args(argv)
    from xlmp_jax.checkpoint import CheckpointError

    try:
        out = export(args.workdir, args.out, step=args.step, overwrite=args.overwrite)
    except (OSError, ValueError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"exported to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
