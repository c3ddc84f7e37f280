"""Running one batch on one instance: merge, the model, split, wherever the batcher runs it (the
instance's own thread, or inline on the event loop).

`run_batch` also reports when the batch began and how long it took, on the batcher's clock: the batcher
keeps a moving average of the time (where the next batch runs, the admission's wait estimate), and a
request's queue time ends when its batch begins (a batch handed to a thread ahead waits there first). A
batch of several requests that runs out of memory is retried as two halves (serving/batching/retry.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from serving.backends.base import Backend, ComputeTimings
from serving.batching.retry import Parts, is_out_of_memory, run_as_halves
from serving.batching.tensors import merge_inputs, split_outputs
from serving.errors import ModelExecutionError
from serving.types import Array, TensorMap

log = logging.getLogger(__name__)

Outcome = tuple[Parts, ComputeTimings, float, float]  # parts, timings, began, took


def run_batch(
    instance: Backend,
    requests: list[TensorMap],
    row_counts: list[int],
    *,
    batching: bool,
    clock: Callable[[], float],
    name: str,
) -> Outcome:
    """One batch of `requests` on `instance`: one part per request (its outputs, or the Exception its half
    of an out-of-memory batch failed with again). Without batching the only request runs as given."""
    began = clock()
    if not batching:
        result = instance.infer(requests[0])
        return [dict(result.outputs)], result.timings, began, clock() - began

    def run(part: list[TensorMap], rows: list[int]) -> tuple[list[dict[str, Array]], ComputeTimings]:
        merged = instance.infer(merge_inputs(part, instance.host_buffer))
        return split_outputs(merged.outputs, rows), merged.timings

    try:
        outputs, timings = run(requests, row_counts)
    except Exception as exc:
        if len(requests) < 2 or not is_out_of_memory(exc):
            raise
        log.warning("%s: a batch of %d requests ran out of memory (%s): two halves", name, len(requests), exc)
        parts, timings = run_as_halves(run, requests, row_counts, name)
        return parts, timings, began, clock() - began
    return list(outputs), timings, began, clock() - began


def execution_error(exc: Exception) -> ModelExecutionError:
    """A fresh error per request (one exception object must not be raised in several tasks)."""
    error = ModelExecutionError(str(exc) or type(exc).__name__)
    error.__cause__ = exc
    return error
