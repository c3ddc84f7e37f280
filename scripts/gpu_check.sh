#!/usr/bin/env bash
# The GPU path, measured, in one go on a device machine (issue 8, item 5); under 5 minutes on a GPU.
#
#   scripts/gpu_wheels.sh                 (here, with a registry: wheels + the small ONNX model, 10 MiB)
#   scripts/gpu_check.sh [RESULTS_DIR]    (there; default $OUT, else build/gpu-check)
#
# The device image has torch 2.11 (CUDA 13), Python 3.12, numpy, grpcio 1.84, uvloop, prometheus-client
# and a CPU-only onnxruntime, and reaches no registry. Steps, each written to RESULTS_DIR/gpu_check.txt:
#   1. install the carried wheels (GPU_CARRIED, default .whl/gpu312) into a private --target folder
#   2. build resnet50 (TorchScript, fp16 + CUDA graphs config) beside the carried mlp_small.onnx
#   3. one inference per backend on cuda:0, against the CPU         (python -m loadtests.bench_gpu backends)
#   4. CUDA graphs per batch-size bucket against eager              (python -m loadtests.bench_gpu graphs)
#      and a batch merged into pinned memory against one staged      (python -m loadtests.bench_gpu pinned)
#      and one image from a page-locked front-end slot               (python -m loadtests.bench_gpu slots)
#   5. served vs raw: ResNet-50 fp16, batch-1 UINT8 requests from many client processes against raw torch's
#      best batch, and the idle p50                                  (python -m loadtests.served_vs_raw)
# Without a GPU it says so, falls back to the CPU (small sizes: it only shows that every step runs),
# and still finishes. Exit status: 0 when every step passed.
set -uo pipefail
cd "$(dirname "$0")/.."
RESULTS_DIR=${1:-${OUT:-build/gpu-check}}
CARRIED=${GPU_CARRIED:-.whl/gpu312}
PYTHON=${PYTHON:-python3}
mkdir -p "$RESULTS_DIR"
RESULTS="$RESULTS_DIR/gpu_check.txt"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
: >"$RESULTS"
FAILED=()
SERVER_PID=""

say() { echo "$*" | tee -a "$RESULTS"; }
cleanup() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# step NAME SECONDS COMMAND...: run it with a time limit, its output into the results file.
step() {
  local name=$1 limit=$2
  shift 2
  say ""
  say "== $name ($(date -u +%H:%M:%S), limit ${limit}s)"
  if [ "$(type -t "$1")" = "function" ]; then  # timeout runs programs, not shell functions
    "$@" 2>&1 | tee -a "$RESULTS"
  else
    timeout "$limit" "$@" 2>&1 | tee -a "$RESULTS"
  fi
  local rc=${PIPESTATUS[0]}
  if [ "$rc" -ne 0 ]; then
    say "!! $name failed (exit $rc)"
    FAILED+=("$name")
  fi
  return "$rc"
}

say "gpu_check on $(hostname) at $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
say "python: $("$PYTHON" -c 'import sys; print(sys.version.split()[0])')"

PYVER=$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
# Without pip in the image, a wheel is a zip file: unpacked into the target folder it imports the same.
unpack_wheels() {
  local wheel
  for wheel in "$CARRIED"/wheels/*.whl; do
    "$PYTHON" -m zipfile -e "$wheel" "$WORK/site" || return 1
  done
  echo "unpacked $(ls "$CARRIED"/wheels/*.whl | wc -l) wheels into $WORK/site (no pip)"
}
if [ -d "$CARRIED/wheels" ] && [ "$PYVER" = "3.12" ]; then
  if "$PYTHON" -m pip --version >/dev/null 2>&1; then
    step "install carried wheels" 120 "$PYTHON" -m pip install --quiet --no-index --no-deps \
      --disable-pip-version-check --target "$WORK/site" "$CARRIED"/wheels/*.whl
  else
    step "unpack carried wheels" 120 unpack_wheels
  fi
  export PYTHONPATH="$WORK/site:$PWD"
else
  say "carried wheels not used ($CARRIED/wheels for Python 3.12; this is $PYVER): using installed packages"
  export PYTHONPATH="$PWD"
fi
step "environment" 60 "$PYTHON" -c '
import grpc, google.protobuf, numpy, torch, onnxruntime
import serving.proto.inference_pb2_grpc, serving.server
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), grpcio {grpc.__version__}, "
      f"protobuf {google.protobuf.__version__}, numpy {numpy.__version__}, onnxruntime {onnxruntime.__version__} "
      f"{onnxruntime.get_available_providers()}")
print("GPUs:", [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])
' || { say "the server cannot be imported: stopping"; exit 1; }

if "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  DEVICE=cuda:0 PRECISION=fp16 DURATION=8 CONCURRENCY=256 CLIENTS=8 RAW_BATCHES=32,64,128
else
  DEVICE=cpu PRECISION=fp32 DURATION=2 CONCURRENCY=4 CLIENTS=2 RAW_BATCHES=1,4
  say ""
  say "NO GPU: torch sees no CUDA device. Falling back to the CPU at small sizes: every step runs, but"
  say "these are not GPU figures (those remain to be measured on a device machine)."
fi
say "device $DEVICE"

REPO="$WORK/repo"
mkdir -p "$REPO"
if [ -f "$CARRIED/repo/mlp_small/1/model.onnx" ]; then
  cp -r "$CARRIED/repo/mlp_small" "$REPO/"
  step "build resnet50" 180 "$PYTHON" models/bench_builder.py "$REPO" --models --resnet50
else
  step "build models" 180 "$PYTHON" models/bench_builder.py "$REPO" --models mlp_small --resnet50
fi

step "one inference per backend" 120 "$PYTHON" -m loadtests.bench_gpu backends "$REPO" "$DEVICE"
step "CUDA graphs per bucket" 120 "$PYTHON" -m loadtests.bench_gpu graphs "$REPO" "$DEVICE"
step "merged into pinned memory" 120 "$PYTHON" -m loadtests.bench_gpu pinned "$REPO" "$DEVICE"
step "page-locked front-end slots" 120 "$PYTHON" -m loadtests.bench_gpu slots "$REPO" "$DEVICE"

# The server, on a port of its own choosing; its log goes into the results when something fails.
SERVER_LOG="$WORK/server.log"
"$PYTHON" -m serving serve --model-repository "$REPO" --host 127.0.0.1 --grpc-port 0 --metrics-port 0 \
  --http-port -1 --load-model resnet50 >"$SERVER_LOG" 2>&1 &
SERVER_PID=$!
URL=""
for _ in $(seq 1 240); do
  URL=$(grep -oE 'ready grpc=[^ ]+' "$SERVER_LOG" | head -1 | cut -d= -f2)
  [ -n "$URL" ] && break
  kill -0 "$SERVER_PID" 2>/dev/null || break
  sleep 0.5
done
if [ -n "$URL" ]; then
  say ""
  say "server ready at $URL: $(grep -cE 'CUDA graph captured' "$SERVER_LOG") CUDA graph(s) captured at load"
  step "served vs raw: resnet50 $PRECISION on $DEVICE" 200 "$PYTHON" -m loadtests.served_vs_raw --url "$URL" \
    --model-repository "$REPO" --model resnet50 --version 1 --device "$DEVICE" --precision "$PRECISION" \
    --raw-batches "$RAW_BATCHES" --concurrency "$CONCURRENCY" --client-processes "$CLIENTS" --idle \
    --duration "$DURATION"
  kill -TERM "$SERVER_PID"
  wait "$SERVER_PID"
  SERVER_RC=$?
  SERVER_PID=""
  [ "$SERVER_RC" -eq 0 ] || { say "!! server exited with $SERVER_RC"; FAILED+=("server exit"); }
else
  say "!! the server did not become ready"
  FAILED+=("server start")
fi
if [ "${#FAILED[@]}" -gt 0 ]; then
  say ""
  say "server log (tail):"
  tail -n 40 "$SERVER_LOG" 2>/dev/null | tee -a "$RESULTS"
fi

say ""
say "gpu_check: device $DEVICE, ${SECONDS}s, $([ "${#FAILED[@]}" -eq 0 ] && echo 'every step passed' || echo "FAILED: ${FAILED[*]}")"
say "results: $RESULTS"
[ "${#FAILED[@]}" -eq 0 ]
