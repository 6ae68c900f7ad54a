"""The mesh and memory settings a Cloud TPU slice runs base and large with: one table, read by the launcher
(``launch.tpu``) and by the compile check (``xlmp_jax.aot``), so both use the same layout for a slice.

The configs' own defaults (``configs/base.py``: data parallel; ``configs/large.py``: FSDP) are for the
CPU/GPU runs they were chosen on. On a TPU slice the layout depends on the chips' HBM and the batch
each one holds (``train.batch_size`` 2048 x 512 tokens over 16 to 256 chips), so it lives here, per
accelerator type. The entries were chosen with the memory plan (``train --plan``, an upper bound) and are
checked by compiling each one for its slice (``bench/aot_table.py``, BENCHMARKS.md): every one must fit,
and each has the best roofline bound of the layouts compiled for its slice there (all are HBM-bound).
Every entry scans over the layers (``model.scan_layers``; numbers equal to the loop's, see
``xlmp_jax.model.layer_stack``). A ``--config.*`` override given by the user for one of these fields replaces
the table's value; a config or slice not in the table keeps the config's
own settings. ``*_baseline`` configs (no pool) use their pooled twin's entry.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

# Scan over the layers on every slice: one layer's program, so each run's compile (and xlmp_jax.aot's) no
# longer grows with depth (large on v5e 16x16: 152 s scanned against 414 s as a 24-layer loop).
_FSDP = {"mesh.data": 1, "mesh.fsdp": -1, "mesh.tensor": 1, "model.scan_layers": True}
_DATA = {"mesh.data": -1, "mesh.fsdp": 1, "mesh.tensor": 1, "model.scan_layers": True}

# (config family, accelerator type) -> config fields. Our choice, by the plan; verified by bench/aot_table.py.
LAYOUTS: dict[tuple[str, str], dict[str, object]] = {
    ("base", "v4-32"): {**_FSDP, "model.remat": "full", "train.grad_accum_steps": 2},
    ("base", "v5litepod-64"): {**_FSDP, "model.remat": "dots_no_batch"},  # "full" crashed the TPU compiler
    ("base", "v5litepod-256"): {**_FSDP, "model.remat": "dots_no_batch"},
    ("base", "v5p-128"): {**_DATA, "model.remat": "none"},
    ("base", "v6e-64"): {**_FSDP, "model.remat": "dots_no_batch"},
    ("large", "v4-32"): {**_FSDP, "model.remat": "full", "train.grad_accum_steps": 2},
    ("large", "v5litepod-64"): {
        **_FSDP,
        "model.remat": "dots_no_batch",
        "train.grad_accum_steps": 2,
    },  # "full" crashed it
    ("large", "v5litepod-256"): {**_FSDP, "model.remat": "dots_no_batch"},
    ("large", "v5p-128"): {**_FSDP, "model.remat": "dots_no_batch"},
    ("large", "v6e-64"): {**_FSDP, "model.remat": "full"},
}


def config_family(config: str) -> str:
    """``'configs/large_baseline.py'`` (or ``...:arg``) -> ``'large'``: the table's key for a config file."""
    stem = pathlib.Path(config.split(":", 1)[0]).stem
    return stem.removesuffix("_baseline")


def layout(config: str, accelerator_type: str) -> dict[str, object]:
    """The table's fields for ``config`` on ``accelerator_type`` ({} when it has no entry)."""
    return dict(LAYOUTS.get((config_family(config), accelerator_type), {}))


def layout_overrides(config: str, accelerator_type: str, given: Sequence[str] = ()) -> list[str]:
    """The table's entry as ``--config.x=v`` overrides, leaving out every field ``given`` already sets.

    Setting any ``mesh.data/fsdp/tensor`` by hand replaces the table's whole mesh (the three must multiply
    to the device count together).
    """
    set_fields = {o.removeprefix("--config.").split("=", 1)[0] for o in given}
    mesh_given = any(f in set_fields for f in ("mesh.data", "mesh.fsdp", "mesh.tensor"))
    out = []
    for field, value in layout(config, accelerator_type).items():
        if field in set_fields or (mesh_given and field in ("mesh.data", "mesh.fsdp", "mesh.tensor")):
            continue
        out.append(f"--config.{field}={value}")
    return out
