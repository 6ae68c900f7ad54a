"""Training metrics: on-device accumulation between log steps, host-side summaries, and the writers.

The train step returns additive sums (``nll_sum``, ``num_predictions``, per-language and pool sums; see
``xlmp_jax.training.steps.make_train_step``). ``accumulate`` adds them up on the device, so the loop touches the
host only every ``train.log_every`` steps; ``summarize`` turns a window's sums into the logged numbers
(token-weighted loss and accuracy, per-language loss, prompt-usage entropy, top prompts per language).
``MetricsWriter`` writes them to ``DIR/metrics.jsonl`` and TensorBoard (``DIR/tb``), process 0 only.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from xlmp_jax.runtime.summary_writer import TensorBoardWriter

# Summed over the window; the rest of a step's metrics are derived from these (or kept as below).
_LAST = ("learning_rate",)
_MAX = ("nan_streak",)
_DERIVED = (
    "loss",
    "objective",
    "mlm_accuracy",
    "pool_usage",
    "pool_usage_entropy",
    "pool_example_entropy",
    "pool_lang_weights",
    "pool_key_loss",
    "pool_diversity_loss",
)
TOP_PROMPTS = 3  # prompts listed per language in the text summary

# Peak dense bf16 FLOP/s per device, for MFU (vendor data sheets; no sparsity).
PEAK_FLOPS: tuple[tuple[str, float], ...] = (
    ("tpu v6", 918e12),  # Trillium / v6e
    ("tpu v5p", 459e12),
    ("tpu v5 lite", 197e12),  # v5e
    ("tpu v5e", 197e12),
    ("tpu v5", 459e12),
    ("tpu v4", 275e12),
    ("tpu v3", 123e12),
    ("tpu v2", 45e12),
    ("h200", 989e12),
    ("h100", 989e12),
    ("gh200", 989e12),
    ("b200", 2250e12),
    ("a100", 312e12),
    ("a10g", 125e12),
    ("l40s", 362e12),
    ("l4", 121e12),
    ("v100", 125e12),
)


def peak_flops_per_device(device_kind: str, override: float = 0.0) -> float:
    """Peak FLOP/s of one device: ``override`` if > 0, else the table's entry for ``device_kind``, else 0."""
    if override and override > 0:
        return float(override)
    kind = device_kind.lower()
    for name, flops in PEAK_FLOPS:
        if name in kind:
            return flops
    return 0.0


def _combine(acc: dict, new: dict) -> dict:
    ok = new["skipped"] == 0  # a skipped (NaN/Inf) step's sums are left out of the window
    out = {}
    for name, value in new.items():
        if name in _DERIVED:
            continue
        if name in _LAST or name.startswith("learning_rate/"):  # each parameter group's, when there are groups
            out[name] = value
        elif name in _MAX:
            out[name] = jnp.maximum(acc[name], value)
        elif name == "skipped":
            out[name] = acc[name] + value
        else:
            out[name] = acc[name] + jnp.where(ok, value, jnp.zeros_like(value))
    out["steps"] = acc["steps"] + 1
    return out


_combine_jit = jax.jit(_combine)


def accumulate(acc: dict | None, metrics: Mapping[str, jax.Array]) -> dict:
    """Adds one step's metrics to the window's running sums, on the device (no host sync)."""
    metrics = dict(metrics)
    if acc is None:
        acc = {k: jnp.zeros_like(v) for k, v in metrics.items() if k not in _DERIVED}
        acc["steps"] = jnp.zeros((), jnp.int32)
    return _combine_jit(acc, metrics)


def to_host(x: Any) -> np.ndarray:
    """A (replicated) global array as NumPy; works on every process of a multi-host run."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return np.asarray(x.addressable_data(0))
    return np.asarray(x)


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def summarize(sums: Mapping[str, Any], languages: Sequence[str], prefix: str = "") -> tuple[dict, dict]:
    """Host-side numbers from a window's (or an eval set's) sums.

    Returns ``(scalars, extra)``: scalars are ``{name: float}`` (``loss``, ``mlm_accuracy``,
    ``loss/<lang>``, ``pool/usage_entropy`` ...); ``extra`` holds ``top_prompts``
    (``{lang: [[prompt, mean weight], ...]}``) when the model has a pool.
    """
    s = {k: to_host(v) for k, v in sums.items()}
    count = float(s["num_predictions"])
    scalars: dict[str, float] = {}
    scalars["loss"] = float(s["nll_sum"]) / count if count else math.nan
    scalars["mlm_accuracy"] = float(s["correct_sum"]) / count if count else math.nan
    if "objective_sum" in s:
        scalars["objective"] = float(s["objective_sum"]) / count if count else math.nan
    steps = int(s.get("steps", 0))
    good = steps - int(s.get("skipped", 0))
    if "grad_norm" in s:
        scalars["grad_norm"] = float(s["grad_norm"]) / good if good else math.nan
    for name in s:
        if name == "learning_rate" or name.startswith("learning_rate/"):
            scalars[name] = float(s[name])
    if "skipped" in s:
        scalars["skipped_steps"] = float(s["skipped"])
    if "nan_streak" in s:
        scalars["nan_streak"] = float(s["nan_streak"])
    lang_count = s.get("lang_count")
    for i, lang in enumerate(languages):
        if lang_count is not None and i < len(lang_count) and lang_count[i] > 0:
            scalars[f"loss/{lang}"] = float(s["lang_loss_sum"][i] / lang_count[i])
            scalars[f"mlm_accuracy/{lang}"] = float(s["lang_correct_sum"][i] / lang_count[i])
    extra: dict[str, Any] = {}
    if "pool_weight_sum" in s and float(s["pool_examples"]) > 0:
        usage = s["pool_weight_sum"] / float(s["pool_examples"])
        scalars["pool/usage_entropy"] = _entropy(usage)  # of the mean retrieval distribution: prompts in use
        scalars["pool/example_entropy"] = float(s["pool_entropy_sum"]) / float(s["pool_examples"])
        scalars["pool/used_prompts"] = float(math.exp(scalars["pool/usage_entropy"]))  # effective number
        for name in ("key_loss", "diversity_loss"):  # training-only pool terms, when their weight is > 0
            if f"pool_{name}_sum" in s:
                scalars[f"pool/{name}"] = float(s[f"pool_{name}_sum"]) / float(s["pool_examples"])
        top = {}
        for i, lang in enumerate(languages):
            n = float(s["lang_examples"][i]) if i < len(s["lang_examples"]) else 0.0
            if n > 0:
                w = s["pool_lang_weight_sum"][i] / n
                order = np.argsort(-w)[:TOP_PROMPTS]
                top[lang] = [[int(j), round(float(w[j]), 4)] for j in order]
        extra["top_prompts"] = top
    return {prefix + k: v for k, v in scalars.items()}, {prefix + k: v for k, v in extra.items()}


def language_means(scalars: Mapping[str, float], languages: Sequence[str], prefix: str = "") -> dict[str, float]:
    """``loss`` and ``mlm_accuracy`` as the plain mean over the languages that have predictions, so every
    language weighs the same however many tokens it has; the token-weighted figures are kept as
    ``loss_tokens`` / ``mlm_accuracy_tokens``, and ``languages`` counts the languages in the mean."""
    out = dict(scalars)
    for name in ("loss", "mlm_accuracy"):
        per = [scalars[key] for lang in languages if (key := f"{prefix}{name}/{lang}") in scalars]
        out[f"{prefix}{name}_tokens"] = scalars[f"{prefix}{name}"]
        out[f"{prefix}{name}"] = float(np.mean(per)) if per else math.nan
    out[f"{prefix}languages"] = float(sum(f"{prefix}loss/{lang}" in scalars for lang in languages))
    return out


def top_prompts_markdown(top: Mapping[str, list]) -> str:
    """The per-language top prompts as a small Markdown table (TensorBoard's text tab)."""
    lines = ["| language | top prompts (id: mean weight) |", "| --- | --- |"]
    for lang, items in top.items():
        lines.append(f"| {lang} | " + ", ".join(f"{i}: {w:.3f}" for i, w in items) + " |")
    return "\n".join(lines)


class MetricsWriter:
    """``DIR/metrics.jsonl`` + TensorBoard events in ``DIR/tb``; a no-op on processes other than 0."""

    def __init__(self, workdir: str, *, active: bool, resume_step: int = 0):
        self.active = active
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._tb: TensorBoardWriter | None = None
        if not active:
            return
        _truncate_after(self.path, resume_step)
        self._tb = TensorBoardWriter(os.path.join(workdir, "tb"))

    def write(self, step: int, scalars: Mapping[str, float], extra: Mapping[str, Any] | None = None) -> None:
        if not self.active:
            return
        record = {"step": int(step), **{k: _json_float(v) for k, v in scalars.items()}, **(extra or {})}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        self._tb.write_scalars(int(step), {k: v for k, v in scalars.items() if math.isfinite(v)})
        for name, value in (extra or {}).items():
            if name.endswith("top_prompts") and value:
                self._tb.write_texts(int(step), {name: top_prompts_markdown(value)})

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _json_float(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def _truncate_after(path: str, step: int) -> None:
    """On resume, drops records of steps after the restored checkpoint (they will be logged again)."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = f.readlines()
    kept = []
    for line in lines:
        try:
            if json.loads(line).get("step", 0) <= step:
                kept.append(line)
        except json.JSONDecodeError:
            continue  # a line torn by a kill mid-write
    if len(kept) != len(lines):
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(kept)
        os.replace(tmp, path)
