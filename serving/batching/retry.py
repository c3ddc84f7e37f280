"""What the batcher does when a batch fails: out-of-memory is retried as two halves, and a version
whose batches keep failing is reported unhealthy.

A batch that runs out of memory (host MemoryError, CUDA's OutOfMemoryError, onnxruntime's failed
allocation) may fit as two smaller ones: each half runs on its own, its requests are answered by it, and
a half that fails again fails only its own requests. Any other backend error fails only the batch's
requests, as before. Both run where the batch ran (worker thread or inline).

`FailureStreak` counts consecutive failed batches of one version: after `threshold` of them the version
reports unhealthy (ModelReady false, serving_model_version_healthy 0) until a batch succeeds again. It
stays routed, so the first good batch heals it and clients keep getting the backend's precise error
meanwhile; other models and versions are untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from serving.backends.base import ComputeTimings
from serving.types import Array, TensorMap

log = logging.getLogger(__name__)

UNHEALTHY_AFTER = 5  # consecutive failed batches
_OOM_WORDS = ("out of memory", "failed to allocate memory", "bad_alloc", "cudaerrormemoryallocation")

Parts = list[dict[str, Array] | Exception]
RunBatch = Callable[[list[TensorMap], list[int]], tuple[list[dict[str, Array]], ComputeTimings]]


def is_out_of_memory(exc: BaseException) -> bool:
    """True for the errors that mean "this batch did not fit": MemoryError, torch's OutOfMemoryError
    (a RuntimeError subclass named so), onnxruntime's allocation failures (a RuntimeException text)."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc).lower()
    return any(word in text for word in _OOM_WORDS)


def run_as_halves(
    run: RunBatch, requests: list[TensorMap], row_counts: list[int], name: str
) -> tuple[Parts, ComputeTimings]:
    """Run the two halves of a batch that ran out of memory, one after the other. A half that fails
    gives its exception to each of its requests."""
    middle = len(requests) // 2
    parts: Parts = []
    timings = ComputeTimings(0, 0, 0)
    for half in (slice(0, middle), slice(middle, None)):
        try:
            outputs, taken = run(requests[half], row_counts[half])
        except Exception as exc:  # this half fails alone
            log.warning("%s: half a batch (%d requests) failed again: %s", name, len(requests[half]), exc)
            parts.extend(exc for _ in requests[half])
            continue
        parts.extend(outputs)
        timings = ComputeTimings(
            timings.input_ns + taken.input_ns,
            timings.infer_ns + taken.infer_ns,
            timings.output_ns + taken.output_ns,
        )
    return parts, timings


class FailureStreak:
    """Consecutive failed batches of one version; unhealthy from `threshold` on, healed by a success."""

    def __init__(self, name: str, threshold: int = UNHEALTHY_AFTER) -> None:
        self._name = name
        self._threshold = threshold
        self._count = 0

    @property
    def healthy(self) -> bool:
        return self._count < self._threshold

    def record(self, failed: bool) -> None:
        was_healthy = self.healthy
        self._count = self._count + 1 if failed else 0
        if was_healthy and not self.healthy:
            log.error(
                "%s: %d batches in a row failed: reported unhealthy until one succeeds",
                self._name,
                self._count,
            )
        elif not was_healthy and self.healthy:
            log.info("%s: a batch succeeded: healthy again", self._name)
