"""The narrow interface every backend implements, and what it returns.

A backend runs one batch on one device. It knows nothing of queues, gRPC or metric names: the batcher
calls `infer` with inputs already merged along axis 0, from a worker thread, or on the event loop for a
model whose batches take microseconds (serving/batching/batcher.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np

from serving.backends.devices import DeviceInventory, Placement
from serving.types import Array, TensorMap

__all__ = ["Backend", "BatchResult", "ComputeTimings", "DeviceInventory", "InstanceSpec", "Placement"]


@dataclass(frozen=True)
class InstanceSpec:
    """What one backend instance loads and where: the model file, config.pbtxt `parameters`, its
    placement, and the devices the process sees."""

    model_file: Path
    placement: Placement
    parameters: Mapping[str, str]
    inventory: DeviceInventory


class TensorDecl(NamedTuple):
    """A config input or output as a backend needs it; `dims` exclude the batch dimension (-1 = any)."""

    name: str
    dtype: np.dtype[Any]  # numpy dtype; BYTES is object
    dims: tuple[int, ...] = ()


@dataclass(frozen=True)
class ComputeTimings:
    """Nanoseconds spent on one batch, in Triton's three compute stages."""

    input_ns: int  # host → device copy / input binding
    infer_ns: int  # the model itself
    output_ns: int  # device → host copy


@dataclass(frozen=True)
class BatchResult:
    outputs: dict[str, Array]  # every output the model has, batch-major, numpy on the host
    timings: ComputeTimings


class Backend(Protocol):
    """One loaded model instance on one device."""

    placement: Placement

    def infer(self, inputs: TensorMap) -> BatchResult:
        """Run one batch; raise any exception to fail the batch (its message reaches the callers)."""
        ...

    def host_buffer(self, name: str, shape: tuple[int, ...], dtype: np.dtype[Any]) -> Array | None:
        """A writable host array of `shape` and `dtype` that the batcher may merge input `name` of a batch
        into, because the backend reads it without a copy of its own (pinned memory, for a GPU); None:
        the batcher allocates as usual. Called from the thread that runs the batch."""
        ...

    def close(self) -> None:
        """Release the model and its device memory; idempotent."""
        ...
