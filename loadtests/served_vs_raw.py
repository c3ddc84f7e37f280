"""Served vs raw: what the server costs (or gains, through dynamic batching) over calling the model.

In one run, on one machine, side by side:
  raw     the model file run in this process by its own framework (onnxruntime or torch), batch 1 and
          batch B, one thread: the latency floor and the throughput ceiling of the bare model;
  served  the same model and version through a running server over gRPC, C concurrent closed-loop
          clients sending one row each: what an application sees.
It prints rows/s and p50 latency for each and the ratios. Only the model file and the public gRPC
protocol are used; nothing of the server is imported.

    python -m loadtests.served_vs_raw --url 127.0.0.1:8001 --model digits --version 1
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from loadtests.inputs import NUMPY_DTYPES
from serving.proto import inference_pb2 as pb
from serving.proto import inference_pb2_grpc

RawRunner = Callable[[np.ndarray], Any]
InputMeta = pb.ModelMetadataResponse.TensorMetadata


def raw_runner(model_file: Path, input_name: str) -> RawRunner:
    if model_file.suffix == ".onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
        return lambda x: session.run(None, {input_name: x})
    import torch

    if model_file.suffix == ".pt":
        module = torch.jit.load(str(model_file))  # type: ignore[no-untyped-call]
    else:
        module = torch.export.load(str(model_file)).module()

    def run(x: np.ndarray) -> Any:
        with torch.inference_mode():
            return module(torch.from_numpy(x))

    return run


def time_raw(run: RawRunner, sample: np.ndarray, duration_s: float) -> tuple[float, float]:
    """(rows per second, median seconds per call) of back-to-back calls on one thread."""
    run(sample)  # warm-up
    latencies: list[float] = []
    end = time.perf_counter() + duration_s
    while time.perf_counter() < end:
        started = time.perf_counter()
        run(sample)
        latencies.append(time.perf_counter() - started)
    return len(latencies) * sample.shape[0] / sum(latencies), float(np.median(latencies))


async def time_served(
    url: str,
    model: str,
    version: str,
    input_meta: InputMeta,
    row: np.ndarray,
    concurrency: int,
    duration_s: float,
) -> tuple[float, float, int]:
    """(rows per second, median latency, errors) of `concurrency` closed-loop clients, one row each."""
    request = pb.ModelInferRequest(model_name=model, model_version=version)
    tensor = request.inputs.add(name=input_meta.name, datatype=input_meta.datatype)
    tensor.shape.extend(row.shape)
    request.raw_input_contents.append(row.tobytes())
    latencies: list[float] = []
    errors = 0
    async with grpc.aio.insecure_channel(url) as channel:
        stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
        await stub.ModelInfer(request)  # warm-up
        end = time.perf_counter() + duration_s

        async def client() -> None:
            nonlocal errors
            while time.perf_counter() < end:
                started = time.perf_counter()
                try:
                    await stub.ModelInfer(request, timeout=30)
                except grpc.aio.AioRpcError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return len(latencies) * row.shape[0] / elapsed, float(np.median(latencies)), errors


def _sample(tensor: InputMeta, rows: int) -> np.ndarray:
    dtype = np.dtype(NUMPY_DTYPES[tensor.datatype])
    shape = [rows] + [d if d > 0 else 1 for d in tensor.shape[1:]]
    rng = np.random.default_rng(0)
    data = rng.integers(0, 16, size=shape) if np.issubdtype(dtype, np.integer) else rng.random(shape) * 16
    return np.ascontiguousarray(data.astype(dtype))


def model_file(repository: Path, model: str, version: str) -> Path:
    folder = repository / model / version
    for name in ("model.onnx", "model.pt", "model.pt2"):
        if (folder / name).is_file():
            return folder / name
    raise SystemExit(f"no model file in {folder}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.served_vs_raw", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--url", default="127.0.0.1:8001")
    parser.add_argument("--model-repository", type=Path, default=Path("models"))
    parser.add_argument("--model", default="digits")
    parser.add_argument("--version", default="1")
    parser.add_argument("--batch", type=int, default=32, help="raw batch size for the throughput ceiling")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    args = parser.parse_args(argv)
    with grpc.insecure_channel(args.url) as channel:
        stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
        metadata = stub.ModelMetadata(pb.ModelMetadataRequest(name=args.model, version=args.version))
    input_meta = metadata.inputs[0]
    batch = _sample(input_meta, args.batch)
    run = raw_runner(model_file(args.model_repository, args.model, args.version), input_meta.name)
    raw1_rps, raw1_p50 = time_raw(run, batch[:1], args.duration)
    rawb_rps, _ = time_raw(run, batch, args.duration)
    served_rps, served_p50, errors = asyncio.run(
        time_served(
            args.url, args.model, args.version, input_meta, batch[:1], args.concurrency, args.duration
        )
    )
    print(f"model {args.model} v{args.version} ({metadata.platform}), {args.duration:.0f}s per measurement")
    print(f"  raw    batch 1  : {raw1_rps:10.0f} rows/s   p50 {raw1_p50 * 1e3:8.3f} ms")
    print(f"  raw    batch {args.batch:<3}: {rawb_rps:10.0f} rows/s")
    print(
        f"  served c={args.concurrency:<3} 1 row: {served_rps:10.0f} rows/s   "
        f"p50 {served_p50 * 1e3:8.3f} ms   errors {errors}"
    )
    print(f"  served / raw batch 1       : {served_rps / raw1_rps:6.2f}x throughput")
    print(f"  served / raw batch {args.batch:<3}     : {served_rps / rawb_rps:6.2f}x throughput")
    print(f"  served p50 / raw batch-1 p50: {served_p50 / raw1_p50:6.1f}x latency")
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
