"""Eval sweeps: every checkpoint x every eval of a sweep config, skipping cells already computed.

    python -m xlmp_jax.evaluate --config=configs/eval_sweep.py \
        --config.workdirs=workdirs/tiny,workdirs/tiny_baseline --config.out=evals/tiny

A cell is (work directory, step, eval, that eval's settings, and its fine-tuning seed for the evals with
``seeds``: one cell per seed, so a sweep stopped half-way keeps every seed it finished); its key is recorded in ``OUT/cells.jsonl``
when it finishes, so re-running after adding a checkpoint (or after an interruption) computes only the
new cells. Outputs: ``results.csv`` / ``results.json`` (one row per checkpoint x eval x language x
metric), ``summary.md`` (with XLM-P vs baseline when both are swept), ``plots/``, ``tb/``.

The evals are the modules listed in ``xlmp_jax.evals.REGISTRY``; this module is the sweep over them, its CLI, and
``pool_report`` (the sweep's pool eval of a run's last checkpoint, as the trainer prints it).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np
from tqdm import tqdm

from xlmp_jax import config_utils
from xlmp_jax.runtime import console

if __name__ == "__main__":  # an eval that needs TensorFlow imports it: off the GPUs, without its C++ chatter
    console.hide_gpus_from_tensorflow_on_import()

from xlmp_jax import evals as registry
from xlmp_jax.evals import pool as pool_eval
from xlmp_jax.evals import selection, xtreme_summary
from xlmp_jax.evals.context import EvalContext, Row, split_list
from xlmp_jax.evals.heldout import text_languages
from xlmp_jax.evals.results import Result, ResultStore, write_tensorboard
from xlmp_jax.hf.encoder import Encoder
from xlmp_jax.model.model_config import ModelConfig
from xlmp_jax.runtime import compile_cache
from xlmp_jax.training import checkpoint_read

EvalFn = Callable[[EvalContext, ml_collections.ConfigDict], list[Row]]  # an eval module's ``run``
SWEEP_CONFIG = str(config_utils.REPO_ROOT / "configs" / "eval_sweep.py")  # the CLI's and pool_report's default


# ----------------------------------------------------------------------------------------- checkpoints


class CheckpointSource:
    """Lists and loads a work directory's checkpoints (``xlmp_jax.training.checkpoint_read``)."""

    def steps(self, workdir: str) -> list[int]:
        return checkpoint_read.all_steps(workdir)

    def load(self, workdir: str, step: int) -> tuple[ml_collections.ConfigDict, Any, int]:
        return checkpoint_read.load_params(workdir, step)


def select_steps(workdir: str, available: Sequence[int], steps: str) -> list[int]:
    """Resolves the ``steps`` setting (all | latest | comma-separated numbers) against ``available``."""
    if not available:
        raise FileNotFoundError(f"no checkpoint in work directory {workdir!r}")
    spec = str(steps).strip().lower()
    if spec in ("all", ""):
        return sorted(available)
    if spec == "latest":
        return [max(available)]
    wanted = []
    for item in split_list(spec):
        try:
            wanted.append(int(item))
        except ValueError:
            raise ValueError(f"steps={steps!r}: {item!r} is not 'all', 'latest' or a step number") from None
    missing = [s for s in wanted if s not in available]
    if missing:
        raise ValueError(f"step {missing[0]} not in work directory {workdir!r} (have: {sorted(available)})")
    return wanted


# ----------------------------------------------------------------------------------------------- sweep


def cell_key(workdir: str, step: int, eval_name: str, settings: Mapping[str, Any]) -> str:
    """Identity of a cell: a changed setting (or the shared batch/length/seed) makes a new cell."""
    blob = json.dumps(settings, sort_keys=True, default=str)
    return f"{workdir}|{step}|{eval_name}|{hashlib.sha1(blob.encode()).hexdigest()[:12]}"


def eval_settings(sweep: ml_collections.ConfigDict, eval_name: str) -> dict[str, Any]:
    own = sweep.get(eval_name)
    own = own.to_dict() if isinstance(own, ml_collections.ConfigDict) else {}
    return {**own, "_shared": {k: sweep[k] for k in ("batch_size", "max_length", "seed")}}


def eval_module(sweep: ml_collections.ConfigDict, name: str) -> str:
    """The registry entry an eval runs: its block's ``module`` (so two blocks, say ``xnli`` and ``pawsx``,
    can both run ``classification`` with their own settings), else its own name."""
    block = sweep.get(name)
    module = block.get("module", "") if isinstance(block, ml_collections.ConfigDict) else ""
    return module or name


def eval_seeds(sweep: ml_collections.ConfigDict, name: str) -> list[int | None]:
    """The fine-tuning seeds of an eval with a ``seeds`` setting (the sweep's seed, +1, ...: one cell each),
    else ``[None]`` (one cell, as before)."""
    block = sweep.get(name)
    if not isinstance(block, ml_collections.ConfigDict) or "seeds" not in block:
        return [None]
    count = block.seeds
    if not isinstance(count, int) or count < 1:
        raise ValueError(f"{name}.seeds={count!r} is not a positive number of fine-tuning seeds")
    return [sweep.seed + i for i in range(count)]


def check_blocks(sweep: ml_collections.ConfigDict, names: Sequence[str], modules: Mapping[str, str]) -> None:
    """Refuses bad fine-tuning settings of the evals swept before any checkpoint is read: every block's
    seeds / eval_every / dev_fraction / devices (``selection.check_block``), then its module's own ``check``."""
    for name in names:
        block = sweep.get(name)
        if not isinstance(block, ml_collections.ConfigDict):
            continue
        selection.check_block(block, name)
        if modules[name] in registry.REGISTRY:
            check = getattr(registry.load(modules[name]), "check", None)
            if check is not None:
                check(block, name)


def run_sweep(
    sweep: ml_collections.ConfigDict,
    *,
    evals: Mapping[str, EvalFn] | None = None,
    checkpoints: CheckpointSource | None = None,
) -> dict[str, Any]:
    """Runs every missing cell of the sweep; returns counts and the output paths."""
    checkpoints = checkpoints or CheckpointSource()
    if not sweep.out:
        raise ValueError("out is empty: set --config.out=DIR for the results")
    workdirs = [os.path.abspath(w) for w in split_list(sweep.workdirs)]
    if not workdirs:
        raise ValueError("workdirs is empty: set --config.workdirs=DIR1,DIR2")
    names = split_list(sweep.evals)
    if not names:
        raise ValueError("evals is empty")
    modules = {name: eval_module(sweep, name) for name in names}
    if evals is None:
        unknown = [modules[n] for n in names if modules[n] not in registry.REGISTRY]
        known = registry.REGISTRY
    else:
        unknown = [n for n in names if n not in evals]
        known = evals
    if unknown:
        raise ValueError(f"unknown eval {unknown[0]!r} (known: {sorted(known)})")
    check_blocks(sweep, names, modules)
    if evals is None:
        evals = {name: registry.load(modules[name]).run for name in names}
    for workdir in workdirs:
        if not os.path.isdir(workdir):
            raise FileNotFoundError(f"work directory {workdir!r} does not exist")
    plan = []  # (workdir, step, [(eval, fine-tuning seed or None, key)])
    for workdir in workdirs:
        for step in select_steps(workdir, checkpoints.steps(workdir), sweep.steps):
            cells = []
            for n in names:
                for seed in eval_seeds(sweep, n):
                    settings = eval_settings(sweep, n)
                    if seed is not None:
                        settings["_finetune_seed"] = seed
                    cells.append((n, seed, cell_key(workdir, step, n, settings)))
            plan.append((workdir, step, cells))

    store = ResultStore(sweep.out)
    total = sum(len(cells) for _, _, cells in plan)
    computed, skipped, new_rows = 0, 0, []
    geometry = console.bar_geometry(sys.stderr)
    with tqdm(total=total, desc="eval sweep", unit="cell", disable=not sweep.progress, **geometry) as bar:
        for workdir, step, cells in plan:
            pending = [(n, seed, k) for n, seed, k in cells if k not in store]
            skipped += len(cells) - len(pending)
            bar.update(len(cells) - len(pending))
            if not pending:
                continue
            run_config, params, step = checkpoints.load(workdir, step)
            encoder = Encoder(ModelConfig.from_dict(run_config.model), params, sweep.batch_size, sweep.max_length)
            for name, seed, key in pending:
                bar.set_postfix_str(f"{os.path.basename(workdir)}@{step} {name}" + (f" seed {seed}" if seed else ""))
                artifact_dir = os.path.join(
                    sweep.out, "plots", f"{os.path.basename(workdir)}-{key.rsplit('|', 1)[-1]}", f"{step}", name
                )
                ctx = EvalContext(workdir, step, run_config, encoder, sweep, artifact_dir, seed)
                row_seed = sweep.seed if seed is None else seed
                rows = [
                    Result(workdir, int(step), encoder.model_type, name, lang, metric, float(value), row_seed)
                    for lang, metric, value in evals[name](ctx, sweep.get(name))
                ]
                store.add(key, rows)
                new_rows += rows
                computed += 1
                bar.update(1)
    csv_path, json_path = store.write_tables()
    if sweep.get("summary_layout", "") == "xtreme":
        headline = xtreme_summary.parse_headline(sweep.headline, names)
        summary = store.write_summary(lambda rows: xtreme_summary.render(rows, names, headline, workdirs))
    else:
        summary = store.write_summary()
    tb = write_tensorboard(sweep.out, new_rows) if sweep.get("tensorboard", False) and new_rows else None
    return {
        "computed": computed,
        "skipped": skipped,
        "csv": csv_path,
        "json": json_path,
        "summary": summary,
        "tensorboard": tb,
        "rows": len(store.rows),
    }


def pool_report(
    workdir: str, languages: Sequence[str], out: str, text_dir: str = "", sweep_config: str = SWEEP_CONFIG
) -> str:
    """What a run's pool learned, as a few console lines: the sweep's pool eval of its last checkpoint on the
    held-out (validation) lines of ``languages`` (empty: every language of ``text_dir`` / the sample), with
    the chance control; its plots go under ``out``. The sweep's settings are the config file ``sweep_config``'s
    (read as the CLI's ``--config`` reads it), with the fields above replaced."""
    sweep = config_utils.load_file(sweep_config)
    sweep.update(dict(workdirs=workdir, out=out, steps="latest", evals="pool", progress=False, tensorboard=False))
    languages = text_languages(",".join(languages), text_dir)
    sweep.pool.update(dict(languages=",".join(languages), text_dir=text_dir))
    run_sweep(sweep)
    rows = {(r.language, r.metric): r.value for r in ResultStore(out).rows}
    plots = sorted({os.path.dirname(p) for p in _files(os.path.join(out, "plots"), ".png")})
    return pool_eval.report(rows, languages, plots[-1] if plots else out)


def _files(root: str, suffix: str) -> list[str]:
    return [os.path.join(d, f) for d, _, names in os.walk(root) for f in names if f.endswith(suffix)]


def main(argv: Sequence[str]) -> None:
    del argv
    console.quiet_library_logs()  # no Orbax INFO lines ("Restoring checkpoint from ...") under the progress bar
    sweep = _CONFIG.value
    try:
        compile_cache.enable(sweep.compilation_cache_dir)  # before the first checkpoint's programs compile
        result = run_sweep(sweep)
    except (ValueError, FileNotFoundError) as e:  # bad input: one clear line, no traceback
        raise SystemExit(f"xlmp_jax.evaluate: error: {e}") from None
    print(json.dumps(result, indent=1, default=lambda x: float(x) if isinstance(x, np.floating) else str(x)))


if __name__ == "__main__":
    from absl import app
    from ml_collections import config_flags

    _CONFIG = config_flags.DEFINE_config_file(
        "config",
        SWEEP_CONFIG,
        "Sweep config (configs/eval_sweep.py).",
    )
    app.run(main)
