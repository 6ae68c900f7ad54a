#!/usr/bin/env bash
# Fetches the pure-Python wheels bench/run_device.sh installs on the GPU machine, whose image has no
# network and lacks them (it has jax 0.11.2, flax, optax, orbax, absl-py, PyYAML; not ml_collections).
# Run here, once, before the device call; bench/device_wheels/ is git-ignored and travels by `carry`.
# Usage: bash bench/fetch_device_wheels.sh [PYTHON]
set -eu
py=${1:-python3}
dest=$(dirname "$0")/device_wheels
mkdir -p "$dest"
"$py" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux2014_x86_64 --platform any -d "$dest" ml_collections==1.1.0
du -sh "$dest"
