"""CLI: ``python -m xlmp_jax.export --workdir=DIR [--step=N] --out=OUT [--overwrite]``.

Writes a checkpoint as a transformers XLM-R directory with the prompt pool beside it; the writer is
``xlmp_jax.hf.writer``, the directory's layout ``xlmp_jax.hf.layout``.
"""

from __future__ import annotations

import argparse
import sys

from xlmp_jax.hf.writer import export
from xlmp_jax.training.checkpoint_read import CheckpointError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m xlmp_jax.export", description="Export a checkpoint to a transformers XLM-R directory."
    )
    parser.add_argument("--workdir", required=True, help="work directory (latest step) or a checkpoint step directory")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")
    args = parser.parse_args(argv)
    try:
        out = export(args.workdir, args.out, step=args.step, overwrite=args.overwrite)
    except (OSError, ValueError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"exported to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
