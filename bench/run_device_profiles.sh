#!/usr/bin/env bash
# Profiles and the cuDNN / batch-size sweep on one H100 host (16 cores): CPU profiles of the base step
# pinned to 2 cores (12,13), GPU profiles of the base step (XLA attention, then cuDNN attention) and a
# gpu_mfu sweep on the rest. It merges the session's second and third device runs (run_device2.sh and
# run_device3.sh, 2026-11-25). Usage: bash bench/run_device_profiles.sh OUTDIR [gpu_configs]
set -u
out=${1:-/tmp/bench_out}; mkdir -p "$out"
configs=${2:-b32_cudnn,b32,b128_cudnn,b32_nopool,b32_dense,b256_cudnn,b128_cudnn_remat}
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
pin() { if command -v taskset >/dev/null; then taskset -c "$@"; else shift; "$@"; fi; }
( export JAX_PLATFORMS=cpu
  for variant in xlmp xlmp_dense; do
    pin 12,13 python3 bench/profile_step.py --size=base --variant=$variant --batch=8 --seq=128 --steps=2 \
      --trace_dir=/tmp/tr_cpu_$variant --json="$out/prof_cpu_$variant.json" >>"$out/prof_cpu.log" 2>&1
  done ) &
pin 0-11 python3 bench/profile_step.py --size=base --batch=32 --seq=512 --dtype=bfloat16 --steps=3 \
  --trace_dir=/tmp/tr_gpu --json="$out/prof_gpu_default.json" 2>&1 | grep --line-buffered -v '^RESULT'
pin 0-11 python3 bench/profile_step.py --size=base --batch=32 --seq=512 --dtype=bfloat16 --steps=3 \
  --overrides='{"attention": "cudnn", "attention_dropout": 0.0}' \
  --trace_dir=/tmp/tr_gpu_cudnn --json="$out/prof_gpu_cudnn.json" 2>&1 | grep --line-buffered -v '^RESULT'
pin 0-11 python3 bench/gpu_mfu.py --configs="$configs" --steps=10 --timeout=150 --json="$out/gpu_mfu_sweep.json" \
  2>&1 | grep --line-buffered -v '^RESULT' | tee "$out/gpu_mfu_sweep.log"
wait
grep --line-buffered -v '^RESULT' "$out/prof_cpu.log"
