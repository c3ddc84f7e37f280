"""Overload shedding in our own code: the admission gate (draining, max concurrent inference calls) and
the batcher's deadline-aware admission (a request whose deadline the queue ahead outlasts is refused now).

The batcher is driven with the fake backend and a fake clock that each batch advances by 1 s, so the
batcher's measured batch time is exactly 1 s.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from serving.api.admission import AdmissionGate
from serving.batching.batcher import DynamicBatcher
from serving.batching.policy import BatchingPolicy
from serving.errors import DeadlineExceeded, QueueFull, Unavailable
from serving.types import Array, TensorMap
from tests.unit.fake_backend import FakeBackend
from tests.unit.test_batching import LONG, FakeClock, RecordingObserver, request, settle


def test_gate_limits_inference_calls_only_and_counts_every_call() -> None:
    gate = AdmissionGate(max_concurrent=2)
    gate.enter(inference=True)
    gate.enter(inference=True)
    with pytest.raises(QueueFull, match="max_concurrent_rpcs 2"):
        gate.enter(inference=True)
    gate.enter(inference=False)  # metadata, admin: not limited, but counted for the drain
    assert gate.in_flight == 3
    gate.leave(inference=True)
    gate.enter(inference=True)  # a slot freed
    assert gate.in_flight == 3


async def test_gate_refuses_while_draining_and_drained_waits_for_every_call() -> None:
    gate = AdmissionGate()
    gate.enter(inference=True)
    gate.begin_drain()
    with pytest.raises(Unavailable, match="shutting down"):
        gate.enter(inference=False)
    assert not await gate.drained(0.01)  # one call still running
    asyncio.get_running_loop().call_later(0.01, gate.leave, True)
    assert await gate.drained(LONG)
    assert gate.in_flight == 0


async def test_a_deadline_the_queue_ahead_outlasts_is_refused_at_admission() -> None:
    clock, observer = FakeClock(), RecordingObserver()

    def one_second_batch(inputs: TensorMap) -> dict[str, Array]:
        clock.advance(1.0)  # the batch "takes" 1 s
        return {"x_out": np.asarray(inputs["x"]) * 2}

    backend = FakeBackend(one_second_batch)
    batcher = DynamicBatcher([backend], BatchingPolicy(max_batch_size=2), clock=clock, observer=observer)
    await batcher.start()
    try:
        # nothing measured yet: no estimate, even a tight deadline is admitted
        await asyncio.wait_for(batcher.infer(request(1), deadline=clock() + 0.5), LONG)
        backend.hold()
        blocker = asyncio.create_task(batcher.infer(request(2, 50)))
        await backend.wait_started(2)
        queued = [asyncio.create_task(batcher.infer(request(2, i * 2))) for i in range(2)]
        await settle()
        assert batcher.queue_depth == 1 and batcher.in_flight == 1 + 1  # one full batch went ahead
        # before it: one batch handed over ahead, 2 queued rows + this one = 2 batches of 2, plus half
        # of the running one: 3.5 s
        with pytest.raises(DeadlineExceeded, match="cannot answer in time .*3500 ms"):
            await batcher.infer(request(1, 9), deadline=clock() + 3.0)
        assert observer.rejected == ["unmeetable"]
        assert batcher.queue_depth == 1  # refused without being queued
        patient = asyncio.create_task(batcher.infer(request(1, 9), deadline=clock() + 4.0))
        await settle()
        assert batcher.queue_depth == 2  # 3.5 s fits in 4 s: admitted
        backend.release()
        await asyncio.wait_for(asyncio.gather(blocker, *queued, patient), LONG)
    finally:
        backend.release()
        await asyncio.wait_for(batcher.close(), LONG)
