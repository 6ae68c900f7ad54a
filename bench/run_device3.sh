#!/usr/bin/env bash
# Third GPU-machine run: cuDNN attention / batch-size sweep / pool and sparse-head cost on the GPU, and
# CPU profiles of the base step pinned to 2 cores. Usage: bash bench/run_device3.sh OUTDIR [gpu_configs]
set -u
out=${1:-/tmp/bench_out}; mkdir -p "$out"
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
pin() { if command -v taskset >/dev/null; then taskset -c "$@"; else shift; "$@"; fi; }
( export JAX_PLATFORMS=cpu
  pin 12,13 python3 bench/profile_step.py --size=base --variant=xlmp --batch=8 --seq=128 --steps=2 \
    --trace_dir=/tmp/tr_cpu_sparse --json="$out/prof_cpu_sparse.json" >"$out/prof_cpu.log" 2>&1
  pin 12,13 python3 bench/profile_step.py --size=base --variant=xlmp_dense --batch=8 --seq=128 --steps=2 \
    --trace_dir=/tmp/tr_cpu_dense --json="$out/prof_cpu_dense.json" >>"$out/prof_cpu.log" 2>&1 ) &
pin 0-11 python3 bench/gpu_mfu.py --configs="${2:-b32_cudnn,b32,b128_cudnn,b32_nopool,b32_dense,b256_cudnn,b128_cudnn_remat}" \
  --steps=10 --timeout=150 --json="$out/gpu_mfu3.json" 2>&1 | grep --line-buffered -v '^RESULT' | tee "$out/gpu_mfu3.log"
wait
grep --line-buffered -v '^RESULT' "$out/prof_cpu.log"
