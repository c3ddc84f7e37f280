"""The device checks of scripts/gpu_check.sh that run on the backends directly (no server).

    python -m loadtests.bench_gpu backends REPOSITORY DEVICE    one inference per backend on DEVICE
    python -m loadtests.bench_gpu graphs REPOSITORY DEVICE      CUDA graphs per bucket vs eager
    python -m loadtests.bench_gpu pinned REPOSITORY DEVICE      merging into pinned memory vs staging
    python -m loadtests.bench_gpu slots REPOSITORY DEVICE       a lone request from a page-locked slot

`backends`: the ONNX backend (mlp_small) and the torch backend (resnet50, fp16) each run one batch on
DEVICE, checked against the same model on the CPU; a backend that cannot use DEVICE (onnxruntime
without its CUDA provider) is reported as such. `graphs`: resnet50 with `cuda_graphs` true and false
on DEVICE; for batches inside and between buckets, the outputs must agree and the time per batch of
each is printed. `pinned`: a batch of 128 one-image requests merged as the batcher merges it, into the
torch backend's pinned `host_buffer` and into plain memory (staged through a pinned block), on DEVICE:
the outputs must agree, the buffer must be pinned, and the time per batch of each is printed. `slots`: a
front-end's slot ring page-locked as the model worker does it (serving/backends/host_memory.py), one
image read from a read-only view of a slot (as serving/frontends/link.py builds it) against the same
image in plain memory (staged): the ring must read as pinned until unpinned, the outputs must agree,
and the time per request of each is printed. Without a GPU `graphs`, `pinned` and `slots` say so and
check nothing. Exit 1 when a check fails.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from serving.backends.base import Backend, Placement, TensorDecl
from serving.backends.devices import detect_inventory
from serving.backends.host_memory import pin_host_memory
from serving.backends.loader import create_backend
from serving.batching.tensors import merge_inputs
from serving.errors import ServingError
from serving.frontends.ring import ALIGN, SlotRing

FP32, UINT8 = np.dtype(np.float32), np.dtype(np.uint8)
RESNET_IN = [TensorDecl("images", UINT8, (3, 224, 224))]
RESNET_OUT = [TensorDecl("logits", FP32, (1000,))]
MLP_IN, MLP_OUT = [TensorDecl("input", FP32, (64,))], [TensorDecl("output", FP32, (10,))]
GRAPH_BATCHES = (1, 3, 8, 32, 100, 128)
FP16_TOLERANCE = 5e-2  # relative to the largest logit: fp16 against fp32, or two fp16 kernel choices


def _backend(repository: Path, model: str, device: str, parameters: dict[str, str]) -> Backend:
    if model == "resnet50":
        return create_backend(
            "pytorch_libtorch",
            repository / "resnet50" / "1" / "model.pt",
            Placement(device),
            parameters,
            detect_inventory(),
            RESNET_IN,
            RESNET_OUT,
            128,
        )
    path = repository / model / "1" / "model.onnx"
    return create_backend(
        "onnxruntime_onnx", path, Placement(device), parameters, detect_inventory(), MLP_IN, MLP_OUT, 64
    )


def _relative(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(actual - expected).max() / max(float(np.abs(expected).max()), 1e-12))


def _images(rows: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (rows, 3, 224, 224), dtype=np.uint8)


def check_backends(repository: Path, device: str) -> list[str]:
    """One inference per backend on `device`, against the CPU; failures start with FAIL."""
    lines = []
    rows = np.random.default_rng(1).standard_normal((4, 64)).astype(np.float32)
    cases: list[tuple[str, str, dict[str, str], dict[str, np.ndarray], str]] = [
        ("onnx", "mlp_small", {}, {"input": rows}, "output"),
        ("torch", "resnet50", {"precision": "fp16"}, {"images": _images(2)}, "logits"),
    ]
    for kind, model, parameters, inputs, output in cases:
        expected = _backend(repository, model, "cpu", {}).infer(inputs).outputs[output]
        try:
            backend = _backend(repository, model, device, parameters)
        except ServingError as err:
            verdict = "FAIL" if kind == "torch" or device == "cpu" else "not on this device"
            lines.append(f"{verdict} backend {kind} ({model}) on {device}: {err}")
            continue
        started = time.perf_counter()
        actual = backend.infer(inputs).outputs[output]
        elapsed = (time.perf_counter() - started) * 1e3
        error = _relative(actual, expected)
        tolerance = FP16_TOLERANCE if device != "cpu" else 1e-5
        verdict = "ok" if error <= tolerance and actual.shape == expected.shape else "FAIL"
        lines.append(
            f"{verdict} backend {kind} ({model}) on {backend.placement.device}: shape {list(actual.shape)}, "
            f"{elapsed:.1f} ms (first call), max error vs CPU fp32 {error:.2e} (tolerance {tolerance:g})"
        )
    return lines


def _median_ms(call: Callable[[], object], repeats: int = 20) -> float:
    call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return float(np.median(times)) * 1e3


def check_graphs(repository: Path, device: str, batches: Sequence[int] = GRAPH_BATCHES) -> list[str]:
    if not device.startswith("cuda"):
        return [f"skipped CUDA graphs: no GPU (device {device}); the bucket logic is unit-tested on the CPU"]
    started = time.perf_counter()
    graphs = _backend(repository, "resnet50", device, {"precision": "fp16", "cuda_graphs": "true"})
    load_s = time.perf_counter() - started
    eager = _backend(repository, "resnet50", device, {"precision": "fp16", "cuda_graphs": "false"})
    captured = getattr(getattr(graphs, "_graphs", None), "captured", [])
    lines = [
        f"CUDA graphs: resnet50 fp16 on {device}, buckets captured at load {captured} ({load_s:.1f} s load)"
    ]
    lines.append("  batch   eager ms   graphs ms   speed-up   max rel. difference")
    for rows in batches:
        images = {"images": _images(rows, seed=rows)}
        with_graphs = graphs.infer(images).outputs["logits"]
        without = eager.infer(images).outputs["logits"]
        difference = _relative(with_graphs, without)
        eager_ms = _median_ms(lambda: eager.infer(images))  # noqa: B023 - called before the next rows
        graph_ms = _median_ms(lambda: graphs.infer(images))  # noqa: B023
        verdict = "" if difference <= FP16_TOLERANCE and with_graphs.shape == without.shape else "   FAIL"
        lines.append(
            f"  {rows:5d}   {eager_ms:8.2f}   {graph_ms:9.2f}   {eager_ms / graph_ms:7.2f}x   "
            f"{difference:.2e}{verdict}"
        )
    if not captured:
        lines.append("FAIL no bucket was captured (see the log for the capture error)")
    return lines


def check_pinned(repository: Path, device: str, rows: int = 128) -> list[str]:
    """A batch of `rows` one-image requests, merged into the backend's pinned buffer and into plain memory."""
    if not device.startswith("cuda"):
        return [f"skipped pinned merge: no GPU (device {device}); merging into a buffer is unit-tested"]
    import torch

    backend = _backend(repository, "resnet50", device, {"precision": "fp16"})
    requests = [{"images": _images(1, seed=i)} for i in range(rows)]
    buffer = backend.host_buffer("images", (rows, 3, 224, 224), UINT8)
    if buffer is None or not torch.from_numpy(buffer).is_pinned():
        return [f"FAIL the torch backend on {device} gave no pinned host buffer for a merged batch"]

    def pinned() -> np.ndarray:
        return backend.infer(merge_inputs(requests, backend.host_buffer)).outputs["logits"]

    def staged() -> np.ndarray:
        return backend.infer(merge_inputs(requests)).outputs["logits"]

    difference = _relative(pinned(), staged())
    pinned_ms, staged_ms = _median_ms(pinned), _median_ms(staged)
    verdict = "ok" if difference <= FP16_TOLERANCE else "FAIL"
    return [
        f"{verdict} pinned merge: resnet50 fp16 on {device}, {rows} one-image requests per batch: "
        f"merged into pinned memory {pinned_ms:.2f} ms, into plain memory then staged {staged_ms:.2f} ms "
        f"per batch (merge + copy in + model + copy out; {staged_ms / pinned_ms:.2f}x); "
        f"max rel. difference {difference:.2e}"
    ]


def check_slots(repository: Path, device: str) -> list[str]:
    """One image from a page-locked front-end slot (one DMA) against the same image staged."""
    if not device.startswith("cuda"):
        return [f"skipped page-locked slots: no GPU (device {device}); their lifetime is unit-tested"]
    import torch

    backend = _backend(repository, "resnet50", device, {"precision": "fp16"})
    ring = SlotRing.create(slots=4)
    ring.unlink()
    image = _images(1)
    size = image.nbytes
    np.frombuffer(ring.memory, np.uint8, size, ring.start(1))[:] = image.reshape(-1)

    def ring_pinned() -> bool:
        return bool(torch.from_numpy(np.frombuffer(ring.memory, np.uint8, ALIGN)).is_pinned())

    unpin = pin_host_memory(ring.memory, "a test slot ring")
    if unpin is None or not ring_pinned():
        return [f"FAIL the slot ring could not be page-locked on {device} (see the log)"]
    view = np.frombuffer(ring.memory, np.uint8, size, ring.start(1)).reshape(image.shape)
    view.flags.writeable = False  # as the link hands a slot's inputs to the core

    def from_slot() -> np.ndarray:
        return backend.infer({"images": view}).outputs["logits"]

    def staged() -> np.ndarray:
        return backend.infer({"images": image}).outputs["logits"]

    difference = _relative(from_slot(), staged())
    slot_ms, staged_ms = _median_ms(from_slot), _median_ms(staged)
    unpin()  # every copy from the view has finished: infer synchronises before it returns
    lines = [] if not ring_pinned() else ["FAIL the ring still reads as pinned after unpinning"]
    verdict = "ok" if difference <= FP16_TOLERANCE else "FAIL"
    return lines + [
        f"{verdict} page-locked slots: resnet50 fp16 on {device}, one image per request: from the slot "
        f"{slot_ms:.3f} ms, staged {staged_ms:.3f} ms ({staged_ms / slot_ms:.2f}x); "
        f"max rel. difference {difference:.2e}"
    ]


CHECKS = {"backends": check_backends, "graphs": check_graphs, "pinned": check_pinned, "slots": check_slots}


def main(argv: Sequence[str]) -> int:
    if len(argv) != 3 or argv[0] not in CHECKS:
        print(f"usage: python -m loadtests.bench_gpu {'|'.join(CHECKS)} REPOSITORY DEVICE", file=sys.stderr)
        return 2
    lines = CHECKS[argv[0]](Path(argv[1]), argv[2])
    for line in lines:
        print(line, flush=True)
    return 1 if any("FAIL" in line for line in lines) else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
