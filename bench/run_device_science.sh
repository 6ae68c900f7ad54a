#!/usr/bin/env bash
# bench.science's device preset in one GPU call (sized for <= 4 minutes on one H100): both arms at size
# `small` (4 layers, 256 wide, bf16), 2 paired seeds, 1000 steps, then the eval sweep on the GPU; report
# in OUTDIR/SCIENCE_DEVICE.md. The device image lacks Beam and TensorFlow, so the shards are prepared here
# and carried; it also lacks some of what the train and eval path imports (checked first, by name).
#
#   python -m data_pipelines.prepare --config=configs/tiny.py --out=workdirs/science_prepared \
#       <bench.science's EXPERIMENT --config.data.* overrides>   # here, once (bench.science prints it)
#   bash bench/run_device_science.sh OUTDIR     # on the GPU machine; carry workdirs/science_prepared and
#                                               # bench/device_wheels (wheels of the modules it reports missing)
set -u
out=${1:-/tmp/science_device}; mkdir -p "$out"
here=$(cd "$(dirname "$0")" && pwd)
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
if ls "$here"/device_wheels/*.whl >/dev/null 2>&1; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/xlmp_site \
    "$here"/device_wheels/*.whl || exit 1
  export PYTHONPATH=/tmp/xlmp_site${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null
"$py" - <<'PY' || exit 1
import importlib.util, sys
need = ("jax", "flax", "optax", "orbax", "sentencepiece", "ml_collections", "grain", "array_record", "etils",
        "sklearn", "scipy", "matplotlib", "tqdm", "simplejson", "cloudpickle", "psutil")
missing = [m for m in need if importlib.util.find_spec(m) is None]
if missing:
    sys.exit("run_device_science: missing on this machine (carry their wheels in bench/device_wheels): " + ", ".join(missing))
import jax
print("jax", jax.__version__, jax.devices())
PY
cd "$here/.." || exit 1
timeout 235 "$py" -m bench.science --preset=device --out="$out/science" --doc="$out/SCIENCE_DEVICE.md" \
  --json="$out/science_device.json" --plots="$out/plots" 2>&1 | tee "$out/science.log"
exit "${PIPESTATUS[0]}"
