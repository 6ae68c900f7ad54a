#!/usr/bin/env bash
# Second GPU-machine run: profiles (GPU bf16 base, CPU fp32 base pinned to 2 cores) and the cuDNN/batch sweep.
set -u
out=${1:-/tmp/bench_out}; mkdir -p "$out"
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
pin() { if command -v taskset >/dev/null; then taskset -c "$@"; else shift; "$@"; fi; }
( export JAX_PLATFORMS=cpu
  pin 12,13 python3 bench/profile_step.py --size=base --variant=xlmp --batch=8 --seq=128 --steps=2 \
    --trace_dir=/tmp/tr_cpu_sparse --json="$out/prof_cpu_sparse.json" >"$out/prof_cpu.log" 2>&1
  pin 12,13 python3 bench/profile_step.py --size=base --variant=xlmp_dense --batch=8 --seq=128 --steps=2 \
    --trace_dir=/tmp/tr_cpu_dense --json="$out/prof_cpu_dense.json" >>"$out/prof_cpu.log" 2>&1 ) &
pin 0-11 python3 bench/profile_step.py --size=base --batch=32 --seq=512 --dtype=bfloat16 --steps=3 \
  --trace_dir=/tmp/tr_gpu --json="$out/prof_gpu_default.json" 2>&1 | grep --line-buffered -v '^RESULT'
pin 0-11 python3 bench/profile_step.py --size=base --batch=32 --seq=512 --dtype=bfloat16 --steps=3 \
  --overrides='{"attention_dropout": 0.0}' --attention_impl=cudnn \
  --trace_dir=/tmp/tr_gpu2 --json="$out/prof_gpu_cudnn.json" 2>&1 | grep --line-buffered -v '^RESULT'
pin 0-11 timeout 300 python3 bench/gpu_mfu.py --configs="${2:-b64_cudnn,b128_cudnn,b128_cudnn_remat}" --steps=10 \
  --json="$out/gpu_mfu2.json" 2>&1 | grep --line-buffered -v '^RESULT' | tee "$out/gpu_mfu2.log"
wait
grep --line-buffered -v '^RESULT' "$out/prof_cpu.log"
