"""Triton's `reshape`: a thin wrapper that lets a backend see its model's own shapes.

Clients see a tensor's config `dims`; the model takes (inputs) or produces (outputs) the `reshape`
shape. The wrapper reshapes inputs on the way in and outputs on the way out, keeping the batch
dimension first when the model batches. The element counts were checked when the config was read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from serving.backends.base import Backend, BatchResult, Placement
from serving.types import Array, TensorMap


class ReshapeBackend:
    """Wraps one backend; `inputs`/`outputs` map a tensor name to the shape on the far side (no batch)."""

    def __init__(
        self,
        inner: Backend,
        inputs: Mapping[str, tuple[int, ...]],
        outputs: Mapping[str, tuple[int, ...]],
        batching: bool,
    ) -> None:
        self.inner = inner
        self.placement: Placement = inner.placement
        self._inputs = dict(inputs)  # client dims → the model's reshape
        self._outputs = dict(outputs)  # the model's reshape → client dims
        self._batching = batching

    def infer(self, inputs: TensorMap) -> BatchResult:
        feeds = {name: self._reshape(name, array, self._inputs.get(name)) for name, array in inputs.items()}
        result = self.inner.infer(feeds)
        outputs = {
            name: self._reshape(name, array, self._outputs.get(name))
            for name, array in result.outputs.items()
        }
        return BatchResult(outputs, result.timings)

    def _reshape(self, name: str, array: Array, shape: tuple[int, ...] | None) -> Array:
        if shape is None:
            return array
        target = (array.shape[0] if array.ndim else 1, *shape) if self._batching else shape
        try:
            return array.reshape(target)
        except ValueError:
            raise ValueError(
                f"reshape: tensor '{name}' of shape {list(array.shape)} cannot become {list(target)}"
            ) from None

    def host_buffer(self, name: str, shape: tuple[int, ...], dtype: np.dtype[Any]) -> Array | None:
        return self.inner.host_buffer(name, shape, dtype)  # a reshape of it is a view: still the buffer

    def close(self) -> None:
        self.inner.close()


def with_reshape(
    backend: Backend,
    inputs: Mapping[str, tuple[int, ...]],
    outputs: Mapping[str, tuple[int, ...]],
    batching: bool,
) -> Backend:
    """The backend itself when no tensor is reshaped, else wrapped in a ReshapeBackend."""
    return ReshapeBackend(backend, inputs, outputs, batching) if inputs or outputs else backend
