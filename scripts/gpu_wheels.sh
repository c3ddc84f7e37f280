#!/usr/bin/env bash
# Prepares what scripts/gpu_check.sh needs on a device machine that reaches no package registry:
# cp312 manylinux wheels of what the server needs and the device image lacks (its grpcio 1.84 is refused
# by our generated code, which wants >= 1.85.1 and protobuf 7.x; it has no aiohttp), and the small ONNX
# bench model (the image has no onnx exporter). Everything lands in one ignored folder, <= 64 MiB:
#
#   scripts/gpu_wheels.sh [DEST]        (default .whl/gpu312; carry it to the device machine)
#
# The image has torch 2.11 (CUDA 13), Python 3.12, numpy, grpcio, uvloop, prometheus-client and a
# CPU-only onnxruntime; pins below follow pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-.whl/gpu312}
PYTHON=${PYTHON:-/work/main/.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
LIMIT_MIB=64
PACKAGES=(
  grpcio==1.85.3
  protobuf==7.36.2
  grpcio-health-checking==1.85.1
  grpcio-reflection==1.85.1
  aiohttp==3.14.5
)
rm -rf "$DEST/wheels"
mkdir -p "$DEST/wheels"
"$PYTHON" -m pip download --quiet --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  --dest "$DEST/wheels" "${PACKAGES[@]}"
# The small bench model, exported here where onnx is installed (models/bench_builder.py).
"$PYTHON" models/bench_builder.py "$DEST/repo" --models mlp_small
size_kib=$(du -sk "$DEST" | cut -f1)
ls -1 "$DEST/wheels"
echo "gpu_wheels: $DEST holds $((size_kib / 1024)) MiB (limit $LIMIT_MIB MiB)"
if [ "$size_kib" -gt $((LIMIT_MIB * 1024)) ]; then
  echo "gpu_wheels: over the $LIMIT_MIB MiB a device machine can be carried" >&2
  exit 1
fi
