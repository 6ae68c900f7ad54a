"""Model FLOPs per trained token, and model FLOPs utilisation (MFU).

Only matmuls count (embedding lookups, softmaxes, LayerNorms and the optimizer do not), and a
matmul of an [n, a] by an [a, b] costs 2·n·a·b forward and twice that backward (input and weight
gradients): 6·n·a·b per training step.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from data_pipelines.batch_format import max_predictions
from xlmp_jax.model.model_config import ModelConfig


def flops_per_token(cfg: ModelConfig, seq_length: int, num_predictions: int) -> float:
    """Training FLOPs (forward + backward) per input token of an XLM-P MLM step.

    With T = ``seq_length``, K = ``num_predictions`` (LM-head positions per row, the K the train step
    gathers), D hidden, F intermediate, N layers, V vocabulary, and a pool of M prompts of Lp vectors
    (Lp = M = 0 without a pool), the encoder runs over S = T + Lp positions (the prompts are prepended),
    and per input token::

        encoder   = 6 · N · (4·D² + 2·D·F) · S / T        Q, K, V, output and the two FFN matmuls
        attention = 6 · N · 2 · S · D · S / T             QKᵀ and AV: 2·S·D each per position, forward
        pool      = 6 · M · D · (1 + Lp) / T              query-key scores and the prompt mix, per row
        head      = 6 · (D² + D·V) · K / T                dense + tied decoder, only at the K positions
        total     = encoder + attention + pool + head

    Without a pool (S = T) this is the usual 6·params + 12·N·T·D, except that the 250k-vocabulary
    decoder counts only at the K gathered positions, as the step computes it.
    """
    if seq_length <= 0 or num_predictions < 0:
        raise ValueError(f"need seq_length > 0 and num_predictions >= 0, got {seq_length}, {num_predictions}")
    t, k = float(seq_length), float(num_predictions)
    d, f, n, v = cfg.hidden_size, cfg.intermediate_size, cfg.num_layers, cfg.vocab_size
    prompt_len = cfg.pool.length if cfg.pool is not None else 0
    pool_size = cfg.pool.size if cfg.pool is not None else 0
    s = t + prompt_len
    encoder = 6.0 * n * (4 * d * d + 2 * d * f) * s / t
    attention = 6.0 * n * 2 * s * d * s / t
    pool = 6.0 * pool_size * d * (1 + prompt_len) / t
    head = 6.0 * (d * d + d * v) * k / t
    return encoder + attention + pool + head


def step_flops_per_device(run: Any, num_devices: int) -> float:
    """Model FLOPs per device of one train step of ``run`` (a ``RunConfig``): ``flops_per_token`` x the
    batch's tokens / devices, plus what ``model.remat`` recomputes in the backward pass: the attention's
    two batched matmuls (4 N S^2 D per row, not saved) for ``dots_no_batch``, the whole forward for ``full``.

    The figure the compiled step's ``cost_analysis()`` is checked against (``bench.cost_table``, ``xlmp_jax.aot``).
    """
    model = run.model
    t = run.data.seq_length
    k = max_predictions(t, run.data.mlm_rate)
    rows = run.train.batch_size
    total = flops_per_token(model, t, k) * rows * t
    s = t + (model.pool.length if model.pool is not None else 0)
    d, f, n = model.hidden_size, model.intermediate_size, model.num_layers
    attention_forward = 4.0 * n * s * s * d * rows
    if model.remat == "dots_no_batch":
        total += attention_forward
    elif model.remat == "full":
        total += attention_forward + 2.0 * n * (4 * d * d + 2 * d * f) * s * rows
    return total / num_devices


def layer_flops_per_device(run: Any, num_devices: int) -> float:
    """The share of ``step_flops_per_device`` that one encoder layer does (matmuls, attention and remat's
    recompute): what each further iteration of a scan over the layers adds, which XLA's cost analysis
    leaves out (it counts a loop body once; ``xlmp_jax.aot``)."""
    model = run.model
    without = dataclasses.replace(run, model=dataclasses.replace(model, num_layers=1, scan_layers=False))
    with_one = step_flops_per_device(without, num_devices)
    none = dataclasses.replace(without, model=dataclasses.replace(without.model, num_layers=2))
    return step_flops_per_device(none, num_devices) - with_one


def mfu(tokens_per_s: float, flops_per_token: float, peak_flops: float) -> float:
    """Model FLOPs utilisation: achieved model FLOP/s over ``peak_flops`` (of all devices together)."""
    if peak_flops <= 0:
        raise ValueError(f"peak_flops must be > 0 (FLOP/s of all devices), got {peak_flops}")
    return tokens_per_s * flops_per_token / peak_flops
