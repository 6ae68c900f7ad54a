#!/usr/bin/env bash
# The GPU-machine run behind BENCHMARKS.md's GPU, weak-scaling and uncontended-CPU figures.
# Runs on one H100 host (16 cores): the GPU bench on cores 0-3, weak scaling on simulated CPU devices on
# cores 4-11, and the xlmp-vs-transformers CPU comparison pinned to 2 cores (12,13) as a clean cross-check
# of the contended 2-core dev-machine run. Usage: bash bench/run_device.sh OUTDIR [gpu_configs] [cpu_sizes]
set -u
out=${1:-/tmp/bench_out}; configs=${2:-b32,b32_fused,b32_rbg,b32_nopool,b32_dense,b64_fused,b128_fused,b128_fused_remat}
cpu_sizes=${3:-small,base}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
pin() { if command -v taskset >/dev/null; then taskset -c "$@"; else shift; "$@"; fi; }
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv
python3 -c "import jax, flax, optax, ml_collections; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())"
JAX_PLATFORMS=cpu pin 4-11 timeout 540 python3 bench/weak_scaling.py --json="$out/weak_scaling.json" >"$out/weak_scaling.log" 2>&1 &
JAX_PLATFORMS=cpu pin 12,13 timeout 540 python3 bench/train_throughput.py --sizes="$cpu_sizes" --steps=4 \
  --json="$out/cpu_2core.json" >"$out/cpu_2core.log" 2>&1 &
pin 0-3 timeout 540 python3 bench/gpu_mfu.py --configs="$configs" --json="$out/gpu_mfu.json" 2>&1 | tee "$out/gpu_mfu.log"
wait
tail -n 12 "$out/weak_scaling.log" "$out/cpu_2core.log"
