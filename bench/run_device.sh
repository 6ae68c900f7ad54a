#!/usr/bin/env bash
# Issue 28's one GPU call (at most ~7 minutes on an H100): base and large at T = 512 in bf16, both
# attention recipes (XLA with attention dropout 0.1; cuDNN flash without), and the candidates of
# BENCHMARKS.md section 5's H100 profile (batch, remat policy, PRNG, host feed vs prefetch), each a
# config of bench/gpu_mfu.py's `issue28` list; then a profile, by kernel and by model part, of the
# fastest base config. tokens/s, MFU against the datasheet and a bf16 matmul of the same run, device
# memory against xlmp_jax.training.memory's plan (`train --plan`) and XLA's compiled-memory analysis.
#
# Every config compiles first, 6 at a time, into a persistent cache; the timed runs then load their
# programs one by one (nothing else on the GPU); no timed run starts after --budget_s.
#
#   bash bench/fetch_device_wheels.sh           # here, once: the wheels the device image lacks
#   bash bench/run_device.sh OUTDIR             # on the GPU machine (BENCHMARKS.md section 5: the call)
#   bash bench/run_device.sh --smoke OUTDIR     # here, on the CPU: the same script at tiny size
set -u
smoke=0; if [ "${1:-}" = "--smoke" ]; then smoke=1; shift; fi
out=${1:-/tmp/bench_out}; mkdir -p "$out"
here=$(cd "$(dirname "$0")" && pwd)
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
if [ "$smoke" = 0 ] && ls "$here"/device_wheels/*.whl >/dev/null 2>&1; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/xlmp_site \
    "$here"/device_wheels/*.whl || exit 1
  export PYTHONPATH=/tmp/xlmp_site${PYTHONPATH:+:$PYTHONPATH}
fi
if [ "$smoke" = 1 ]; then
  export JAX_PLATFORMS=cpu
  flags=(--smoke --precompile=2 --budget_s=0 --timeout=120)
else
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv
  flags=(--precompile=6 --budget_s=300 --timeout=150 --warmup=2 --steps=10)
fi
"$py" -c "import jax, flax, optax, ml_collections; print('jax', jax.__version__, 'flax', flax.__version__, \
'optax', optax.__version__, jax.devices())" || exit 1
cache=$(mktemp -d /tmp/xlmp_cache.XXXXXX)
set -o pipefail
"$py" "$here/gpu_mfu.py" --configs=issue28 "${flags[@]}" --cache_dir="$cache" --profile_best \
  --trace_dir="$cache/traces" --json="$out/gpu_mfu.json" 2>&1 | grep --line-buffered -v '^RESULT' \
  | tee "$out/gpu_mfu.log"
rc=$?
rm -rf "$cache"
exit $rc
