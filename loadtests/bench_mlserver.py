"""``--peer mlserver``: MLServer 1.7.1 serving the bench's ONNX files, in its own virtualenv.

The virtualenv (``WORK/mlserver-venv``, reused when it already has MLServer 1.7.1) gets mlserver==1.7.1,
uvloop==0.21.0 (MLServer 1.7.1 fails to start with newer uvloop) and onnxruntime. A small custom runtime
(RUNTIME below) serves each model's ONNX file through onnxruntime with one intra-op thread; requests
go over gRPC, as to ours. Four configurations are tried, one server after another: adaptive batching
off/on (max_batch_size 64, max_batch_time 500 us, like ours) x parallel_workers 0 / default; for each
(model, batch) the best one (highest sum of req/s over the concurrency levels) is shown.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import grpc

from loadtests.bench_client import Probe, Window, measure
from loadtests.bench_servers import BenchServerError, Subprocess, free_port, spawn
from loadtests.units import parse_duration
from serving.proto import inference_pb2 as pb
from serving.proto import inference_pb2_grpc as pb_grpc

VERSION = "1.7.1"
PACKAGES = (f"mlserver=={VERSION}", "uvloop==0.21.0", "onnxruntime==1.31.1")
CONFIGS: dict[str, tuple[bool, int | None]] = {  # name -> (adaptive batching, parallel_workers)
    "off-0": (False, 0),
    "off-default": (False, None),
    "on-0": (True, 0),
    "on-default": (True, None),
}
RUNTIME = '''"""The bench's MLServer runtime: one ONNX file through onnxruntime, one intra-op thread."""
import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class OnnxRuntime(MLModel):
    async def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        uri = self.settings.parameters.uri
        self._session = ort.InferenceSession(uri, options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self._output = self._session.get_outputs()[0].name
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        rows = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32, copy=False)
        result = self._session.run([self._output], {self._input: rows})[0]
        return InferenceResponse(
            model_name=self.name, outputs=[NumpyCodec.encode_output(self._output, result)]
        )
'''
Pairs = Mapping[tuple[str, int], tuple[Probe, Probe]]
Best = dict[tuple[str, int], tuple[str, dict[int, Window]]]


def describe(config: str) -> str:
    batching, workers = CONFIGS[config]
    return (
        f"adaptive batching {'on' if batching else 'off'}, "
        f"parallel_workers {'default' if workers is None else workers}"
    )


def ensure_venv(venv: Path) -> Path:
    """The venv's `mlserver` executable, installing MLServer there first when it is not."""
    mlserver = venv / "bin" / "mlserver"
    marker = venv / "bench-mlserver.json"
    if mlserver.exists() and marker.is_file() and json.loads(marker.read_text()) == list(PACKAGES):
        return mlserver
    print(f"setting up MLServer {VERSION} in {venv} (once) ...", flush=True)
    base = getattr(sys, "_base_executable", sys.executable)  # not the project venv's python
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    done = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", *PACKAGES], capture_output=True, text=True
    )
    if done.returncode != 0 or not mlserver.exists():
        raise BenchServerError(f"installing {PACKAGES} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    marker.write_text(json.dumps(list(PACKAGES)))
    return mlserver


def write_config(folder: Path, repository: Path, models: Sequence[str], config: str) -> int:
    """MLServer's settings and one model-settings.json per model under `folder`; returns the gRPC port."""
    batching, workers = CONFIGS[config]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bench_runtime.py").write_text(RUNTIME)
    grpc_port = free_port()
    settings: dict[str, object] = {
        "host": "127.0.0.1",
        "http_port": free_port(),
        "grpc_port": grpc_port,
        "metrics_port": free_port(),
    }
    if workers is not None:
        settings["parallel_workers"] = workers
    (folder / "settings.json").write_text(json.dumps(settings, indent=1))
    for model in models:
        model_settings: dict[str, object] = {
            "name": model,
            "implementation": "bench_runtime.OnnxRuntime",
            "parameters": {"uri": str((repository / model / "1" / "model.onnx").resolve())},
        }
        if batching:
            model_settings.update(max_batch_size=64, max_batch_time=0.0005)
        (folder / model).mkdir(exist_ok=True)
        (folder / model / "model-settings.json").write_text(json.dumps(model_settings, indent=1))
    return grpc_port


def wait_ready(server: Subprocess, url: str, models: Sequence[str], timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(url) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise BenchServerError(
                    f"MLServer exited with {server.process.returncode}:\n{server.log_tail()}"
                )
            try:
                if all(stub.ModelReady(pb.ModelReadyRequest(name=m), timeout=2).ready for m in models):
                    server.url = url
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.5)
    server.stop()
    raise BenchServerError(f"MLServer not ready after {timeout_s:.0f}s:\n{server.log_tail()}")


def start(mlserver: Path, folder: Path, grpc_port: int, models: Sequence[str]) -> Subprocess:
    env = {"PYTHONPATH": str(folder), "PATH": f"{mlserver.parent}:/usr/bin:/bin", "HOME": str(folder)}
    server = spawn(
        f"MLServer {folder.name}", [str(mlserver), "start", str(folder)], folder / "mlserver.log", env
    )
    wait_ready(server, f"127.0.0.1:{grpc_port}", models)
    return server


def measure_mlserver(
    work_dir: Path, repository: Path, pairs: Pairs, levels: Sequence[int], args: argparse.Namespace
) -> Best:
    """Each configuration's windows for every (model, batch); the best configuration's, per pair."""
    mlserver = ensure_venv(work_dir / "mlserver-venv")
    models = sorted({model for model, _ in pairs})
    chosen = list(CONFIGS) if args.peer_configs == "all" else args.peer_configs.split(",")
    unknown = sorted(set(chosen) - set(CONFIGS))
    if unknown:
        raise ValueError(f"--peer-configs: unknown {unknown}; known {sorted(CONFIGS)}")
    duration, warmup = parse_duration(args.duration), parse_duration(args.warmup)
    best: Best = {}
    for config in chosen:
        folder = work_dir / "mlserver" / config
        server = start(mlserver, folder, write_config(folder, repository, models, config), models)
        try:
            for key, (probe, _) in pairs.items():
                windows = {
                    c: measure(server.url, probe, c, duration, warmup, args.check_every) for c in levels
                }
                print(
                    f"  MLServer {describe(config)}, {key[0]} batch {key[1]}: "
                    + " ".join(f"c={c} {w.rows_per_s:,.0f}" for c, w in windows.items()),
                    flush=True,
                )
                if key not in best or _total(windows) > _total(best[key][1]):
                    best[key] = (describe(config), windows)
        finally:
            server.stop()
    return best


def _total(windows: Mapping[int, Window]) -> float:
    return sum(window.rows_per_s for window in windows.values())
