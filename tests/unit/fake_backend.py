"""A fake Backend for tests of the batcher, routing and lifecycle: records every batch, can hold or fail.

Default behaviour: every input `name` comes back as output `name_out` = input * 2 (numeric dtypes).
`hold()` makes the next batches block in their worker thread until `release()`; `wait_started(n)` waits
(from async code) until n batches have entered `infer`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from serving.backends.base import BatchResult, ComputeTimings, Placement
from serving.types import Array, TensorMap

TIMINGS = ComputeTimings(input_ns=1, infer_ns=2, output_ns=3)
Transform = Callable[[TensorMap], dict[str, Array]]


def double(inputs: TensorMap) -> dict[str, Array]:
    return {f"{name}_out": np.asarray(array) * 2 for name, array in inputs.items()}


class FakeBackend:
    def __init__(self, transform: Transform = double, *, device: str = "cpu") -> None:
        self.placement = Placement(device)
        self.transform = transform
        self.batches: list[dict[str, Array]] = []  # copies of the inputs of every batch, in call order
        self.closed = False
        self._gate = threading.Event()
        self._gate.set()
        self._started = threading.Condition()
        self._started_count = 0
        self._active = 0
        self.max_active = 0  # most batches inside infer at once

    def host_buffer(self, name: str, shape: tuple[int, ...], dtype: np.dtype[Any]) -> Array | None:
        return None

    def hold(self) -> None:
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    def infer(self, inputs: TensorMap) -> BatchResult:
        with self._started:
            self.batches.append({name: np.array(array, copy=True) for name, array in inputs.items()})
            self._started_count += 1
            self._active += 1
            self.max_active = max(self.max_active, self._active)
            self._started.notify_all()
        try:
            if not self._gate.wait(timeout=30):
                raise TimeoutError("FakeBackend was held for 30 s and never released")
            return BatchResult(outputs=self.transform(inputs), timings=TIMINGS)
        finally:
            with self._started:
                self._active -= 1

    def close(self) -> None:
        self.closed = True

    @property
    def batch_rows(self) -> list[int]:
        """Rows of every batch so far (axis 0 of its first input)."""
        return [next(iter(batch.values())).shape[0] for batch in self.batches]

    async def wait_started(self, count: int, timeout: float = 10.0) -> None:
        """Wait until `count` batches have entered infer (they may still be held)."""

        def wait() -> bool:
            with self._started:
                return self._started.wait_for(lambda: self._started_count >= count, timeout)

        if not await asyncio.to_thread(wait):
            raise AssertionError(f"only {self._started_count} of {count} batches started within {timeout} s")
