"""A batch that runs out of memory is retried as two halves; a version whose batches keep failing reports
unhealthy until one succeeds (serving/batching/retry.py), driven through a real DynamicBatcher."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch

from serving.batching.policy import BatchingPolicy
from serving.batching.retry import UNHEALTHY_AFTER, is_out_of_memory
from serving.errors import ModelExecutionError
from serving.types import Array, TensorMap
from tests.unit.fake_backend import TIMINGS, FakeBackend
from tests.unit.test_batching import (  # noqa: F401  (make: the fixture)
    LONG,
    Factory,
    RecordingObserver,
    block,
    hold_with_blocker,
    make,
    request,
    results,
    settle,
    submit,
)

ORT_OOM = (
    "[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned while running MatMul node. "
    "Name:'/fc1/MatMul' Status Message: Failed to allocate memory for requested buffer of size 4294967296"
)


def fits_two_rows(inputs: TensorMap) -> dict[str, Array]:
    """A model whose memory holds at most 2 rows; negative values fail it outright."""
    x = inputs["x"]
    if x.shape[0] > 2:
        raise MemoryError(f"{x.shape[0]} rows do not fit")
    if (x < 0).any():
        raise RuntimeError(ORT_OOM)  # the half fails again, still "out of memory"
    return {"x_out": x * 2}


async def test_a_batch_out_of_memory_runs_again_as_two_halves(make: Factory) -> None:  # noqa: F811
    backend, observer = FakeBackend(fits_two_rows), RecordingObserver()
    batcher = await make([backend], BatchingPolicy(max_batch_size=4), observer=observer)
    blocker = await hold_with_blocker(batcher, backend)
    tasks = [submit(batcher, request(1, start)) for start in range(4)]
    await settle()
    backend.release()
    done = await results([blocker, *tasks])
    assert backend.batch_rows == [1, 4, 2, 2]  # the blocker, the batch that did not fit, its two halves
    for result, start in zip(done[1:], range(4), strict=True):
        np.testing.assert_array_equal(result.outputs["x_out"], block(1, start) * 2)
        assert result.timings.infer_ns == 2 * TIMINGS.infer_ns  # both halves' compute
    assert [error for _, _, _, error in observer.batches] == [None, None]
    assert batcher.healthy


async def test_a_half_that_fails_again_fails_only_its_own_requests(make: Factory) -> None:  # noqa: F811
    backend = FakeBackend(fits_two_rows)
    batcher = await make([backend], BatchingPolicy(max_batch_size=4))
    blocker = await hold_with_blocker(batcher, backend)
    first_half = [submit(batcher, request(1, 0)), submit(batcher, request(1, 1))]
    second_half = [submit(batcher, {"x": -block(1, 2)}), submit(batcher, request(1, 3))]
    await settle()
    backend.release()
    done = await results([blocker, *first_half])
    np.testing.assert_array_equal(done[1].outputs["x_out"], block(1, 0) * 2)
    for task in second_half:
        with pytest.raises(ModelExecutionError, match="Failed to allocate memory"):
            await asyncio.wait_for(task, LONG)
    assert backend.batch_rows == [1, 4, 2, 2]


def fails_above_two_rows(inputs: TensorMap) -> dict[str, Array]:
    if inputs["x"].shape[0] > 2:
        raise ValueError("shape mismatch in the model")  # not memory: no retry
    return {"x_out": inputs["x"] * 2}


async def test_other_errors_fail_the_batch_without_a_retry(make: Factory) -> None:  # noqa: F811
    backend = FakeBackend(fails_above_two_rows)
    batcher = await make([backend], BatchingPolicy(max_batch_size=4))
    blocker = await hold_with_blocker(batcher, backend)
    tasks = [submit(batcher, request(1, start)) for start in range(4)]
    await settle()
    backend.release()
    await results([blocker])
    for task in tasks:
        with pytest.raises(ModelExecutionError, match="shape mismatch"):
            await asyncio.wait_for(task, LONG)
    assert backend.batch_rows == [1, 4]


def fail_on_negative(inputs: TensorMap) -> dict[str, Array]:
    if (inputs["x"] < 0).any():
        raise RuntimeError("negative input: boom")
    return {"x_out": inputs["x"] * 2}


async def test_consecutive_failed_batches_make_the_version_unhealthy_until_one_succeeds(
    make: Factory,  # noqa: F811
) -> None:
    batcher = await make([FakeBackend(fail_on_negative)], BatchingPolicy(max_batch_size=4))
    for n in range(UNHEALTHY_AFTER):
        assert batcher.healthy, f"healthy after {n} failed batches"
        with pytest.raises(ModelExecutionError):
            await asyncio.wait_for(batcher.infer({"x": -block(1, 1)}), LONG)
    assert not batcher.healthy
    result = await asyncio.wait_for(batcher.infer(request(1)), LONG)  # still routed: a good batch heals it
    np.testing.assert_array_equal(result.outputs["x_out"], block(1) * 2)
    assert batcher.healthy


def test_out_of_memory_is_recognised_in_each_backends_words() -> None:
    assert is_out_of_memory(MemoryError())
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(RuntimeError(ORT_OOM))
    assert is_out_of_memory(
        RuntimeError(
            "The following operation failed in the TorchScript interpreter. RuntimeError: CUDA out of memory."
        )
    )
    assert not is_out_of_memory(RuntimeError("negative input: boom"))
    assert not is_out_of_memory(ValueError("shape mismatch in the model"))
