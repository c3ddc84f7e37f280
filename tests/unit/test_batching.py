"""The dynamic batcher, driven with a fake backend, events and a fake clock (no sleeps decide behaviour).

Pattern: hold the only instance with a "blocker" batch, queue requests behind it, check the queue, release,
then check which batches the backend saw.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import numpy as np
import pytest

from serving.backends.base import ComputeTimings
from serving.batching.batcher import DynamicBatcher
from serving.batching.policy import BatchingPolicy, choose_batch
from serving.batching.queue import RequestResult
from serving.batching.tensors import merge_inputs, split_outputs
from serving.errors import DeadlineExceeded, InvalidInput, ModelExecutionError, QueueFull, Unavailable
from serving.types import Array, TensorMap
from tests.unit.fake_backend import TIMINGS, FakeBackend, double

LONG = 10.0  # generous timeout for anything that must happen


class FakeClock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RecordingObserver:
    def __init__(self) -> None:
        self.batches: list[tuple[int, int, ComputeTimings | None, BaseException | None]] = []
        self.rejected: list[str] = []

    def on_batch(
        self, rows: int, requests: int, timings: ComputeTimings | None, error: BaseException | None
    ) -> None:
        self.batches.append((rows, requests, timings, error))

    def on_rejected(self, reason: str) -> None:
        self.rejected.append(reason)


def block(n: int, start: int = 0, width: int = 2, dtype: Any = np.float32) -> Array:
    """n rows of distinct values: row i holds start*width + i*width ... ."""
    return np.arange(start * width, (start + n) * width, dtype=dtype).reshape(n, width)


def request(n: int, start: int = 0, width: int = 2, dtype: Any = np.float32) -> dict[str, Array]:
    return {"x": block(n, start, width, dtype)}


async def settle() -> None:
    """Let every ready task run (enqueue, scheduler pass); worker threads are awaited with events instead."""
    for _ in range(20):
        await asyncio.sleep(0)


Factory = Callable[..., Awaitable[DynamicBatcher]]


@pytest.fixture
async def make() -> AsyncIterator[Factory]:
    created: list[tuple[DynamicBatcher, Sequence[FakeBackend]]] = []

    async def factory(
        instances: Sequence[FakeBackend], policy: BatchingPolicy, **kwargs: Any
    ) -> DynamicBatcher:
        batcher = DynamicBatcher(instances, policy, **kwargs)
        await batcher.start()
        created.append((batcher, instances))
        return batcher

    yield factory
    for batcher, instances in created:
        for backend in instances:
            backend.release()
        await asyncio.wait_for(batcher.close(), LONG)


async def hold_with_blocker(
    batcher: DynamicBatcher, backend: FakeBackend, rows: int = 1
) -> asyncio.Task[Any]:
    backend.hold()
    blocker = asyncio.create_task(batcher.infer(request(rows, start=90)))
    await backend.wait_started(1)
    return blocker


def submit(batcher: DynamicBatcher, inputs: TensorMap, **kwargs: Any) -> asyncio.Task[RequestResult]:
    return asyncio.create_task(batcher.infer(inputs, **kwargs))


async def results(tasks: Sequence[asyncio.Task[RequestResult]]) -> list[RequestResult]:
    return list(await asyncio.wait_for(asyncio.gather(*tasks), LONG))


# ---- pure functions --------------------------------------------------------------------------------


def test_merge_and_split_round_trip_with_mixed_row_counts() -> None:
    requests = [
        {"a": block(1, 0), "b": block(1, 0, width=3, dtype=np.int64)},
        {"a": block(3, 1), "b": block(3, 1, width=3, dtype=np.int64)},
        {"a": block(2, 4), "b": block(2, 4, width=3, dtype=np.int64)},
    ]
    merged = merge_inputs(requests)
    np.testing.assert_array_equal(merged["a"], block(6, 0))
    np.testing.assert_array_equal(merged["b"], block(6, 0, width=3, dtype=np.int64))
    parts = split_outputs(merged, [1, 3, 2])
    assert len(parts) == 3
    for part, original in zip(parts, requests, strict=True):
        assert part.keys() == original.keys()
        for name in original:
            np.testing.assert_array_equal(part[name], original[name])
            assert part[name].dtype == original[name].dtype


def test_merge_passes_a_lone_request_through_without_copying() -> None:
    inputs = request(3)
    assert merge_inputs([inputs])["x"] is inputs["x"]


def test_merge_writes_into_the_arrays_allocate_gives_and_allocates_itself_where_it_gives_none() -> None:
    requests = [
        {"a": block(1, 0), "b": block(1, 0, dtype=np.int64)},
        {"a": block(2, 1), "b": block(2, 1, dtype=np.int64)},
    ]
    given: dict[str, Array] = {}
    asked: list[tuple[str, tuple[int, ...], np.dtype[Any]]] = []

    def allocate(name: str, shape: tuple[int, ...], dtype: np.dtype[Any]) -> Array | None:
        asked.append((name, shape, dtype))
        if name != "a":
            return None
        given[name] = np.full(shape, -1, dtype)
        return given[name]

    merged = merge_inputs(requests, allocate)
    assert asked == [("a", (3, 2), np.dtype(np.float32)), ("b", (3, 2), np.dtype(np.int64))]
    assert merged["a"] is given["a"]
    np.testing.assert_array_equal(given["a"], block(3, 0))
    np.testing.assert_array_equal(merged["b"], block(3, 0, dtype=np.int64))
    lone = request(2)
    assert merge_inputs([lone], allocate)["x"] is lone["x"] and len(asked) == 2  # not asked: no merge


def test_split_rejects_outputs_whose_rows_do_not_match_the_batch() -> None:
    with pytest.raises(ModelExecutionError, match="output 'y' has 5 rows but the batch has 6"):
        split_outputs({"y": block(5)}, [1, 3, 2])


@pytest.mark.parametrize(
    ("rows", "can_grow", "timer_expired", "expected"),
    [
        ([1], True, False, 0),  # wait for a fuller batch
        ([1], True, True, 1),  # the oldest request waited max_queue_delay
        ([1], False, False, 1),  # the next request cannot join: no reason to wait
        ([4, 4], True, False, 2),  # full
        ([1, 1], True, False, 2),  # exactly a preferred size
        ([1, 1, 1], True, False, 2),  # more than a preferred size: take the preferred prefix
        ([1, 1, 1, 1, 1], True, False, 4),  # the largest preferred prefix
        ([3], True, False, 0),  # no preferred boundary reached
    ],
)
def test_choose_batch(rows: list[int], can_grow: bool, timer_expired: bool, expected: int) -> None:
    policy = BatchingPolicy(max_batch_size=8, preferred_batch_sizes=(2, 4), max_queue_delay_s=1.0)
    assert choose_batch(rows, policy, can_grow=can_grow, timer_expired=timer_expired) == expected


# ---- policy validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_batch_size": -1}, "max_batch_size"),
        ({"max_batch_size": 8, "preferred_batch_sizes": (0,)}, "preferred_batch_sizes"),
        ({"max_batch_size": 8, "preferred_batch_sizes": (16,)}, "preferred_batch_sizes entry 16 exceeds"),
        ({"max_batch_size": 0, "preferred_batch_sizes": (1,)}, "preferred_batch_sizes entry 1 exceeds"),
        ({"max_batch_size": 8, "preferred_batch_sizes": (4, 4)}, "preferred_batch_sizes has duplicates"),
        ({"max_batch_size": 8, "max_queue_delay_s": -0.1}, "max_queue_delay_s"),
        ({"max_batch_size": 8, "max_queue_delay_s": float("nan")}, "max_queue_delay_s"),
        ({"max_batch_size": 8, "max_queue_size": -1}, "max_queue_size"),
        ({"max_batch_size": 8, "default_timeout_s": 0.0}, "default_timeout_s"),
        ({"max_batch_size": 8, "default_timeout_s": -1.0}, "default_timeout_s"),
    ],
)
def test_policy_validation_names_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        BatchingPolicy(**kwargs)


# ---- request validation ----------------------------------------------------------------------------


async def test_invalid_requests_are_rejected(make: Factory) -> None:
    backend = FakeBackend()
    batcher = await make([backend], BatchingPolicy(max_batch_size=4))
    with pytest.raises(InvalidInput, match="request batch size 5 exceeds max_batch_size 4"):
        await batcher.infer(request(5))
    with pytest.raises(InvalidInput, match="'a' has 2, 'b' has 3"):
        await batcher.infer({"a": block(2), "b": block(3)})
    with pytest.raises(InvalidInput, match="no batch dimension"):
        await batcher.infer({"x": np.float32(1.0) * np.ones(())})
    assert backend.batches == []


async def test_not_started_and_closed_batchers_refuse_requests() -> None:
    backend = FakeBackend()
    batcher = DynamicBatcher([backend], BatchingPolicy(max_batch_size=4))
    with pytest.raises(Unavailable, match="not started"):
        await batcher.infer(request(1))
    await batcher.start()
    assert (await asyncio.wait_for(batcher.infer(request(1)), LONG)).batch_rows == 1
    await asyncio.wait_for(batcher.close(), LONG)
    with pytest.raises(Unavailable):
        await batcher.infer(request(1))
    assert not backend.closed  # the owner closes backends


# ---- batching ----------------------------------------------------------------------------------------


async def test_mixed_row_requests_are_merged_split_exactly_and_never_exceed_max(make: Factory) -> None:
    backend, observer = FakeBackend(), RecordingObserver()
    batcher = await make([backend], BatchingPolicy(max_batch_size=4), observer=observer)
    blocker = await hold_with_blocker(batcher, backend)
    sizes = [3, 2, 2, 1, 1, 1, 1, 1]
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    tasks = [submit(batcher, request(n, start)) for n, start in zip(sizes, starts, strict=True)]
    await settle()
    # the 3 rows cannot grow (the next 2 do not fit): handed to the busy instance ahead, the rest waits
    assert batcher.queue_depth == len(sizes) - 1 and batcher.in_flight == 1 + 1
    backend.release()
    done = await results([blocker, *tasks])
    # FIFO up to 4 rows; 3 rows then 2 rows do not fit together, so the 3 go alone
    assert backend.batch_rows == [1, 3, 4, 4, 1]
    for result, n, start in zip(done[1:], sizes, starts, strict=True):
        np.testing.assert_array_equal(result.outputs["x_out"], block(n, start) * 2)
        assert result.timings == TIMINGS
    assert [r.batch_rows for r in done[1:]] == [3, 4, 4, 4, 4, 4, 4, 1]
    assert [(rows, count) for rows, count, _, _ in observer.batches] == [
        (1, 1),
        (3, 1),
        (4, 2),
        (4, 4),
        (1, 1),
    ]
    assert batcher.queue_depth == 0 and batcher.in_flight == 0


async def test_many_requests_make_several_batches_none_above_max(make: Factory) -> None:
    backend = FakeBackend()
    batcher = await make([backend], BatchingPolicy(max_batch_size=4))
    blocker = await hold_with_blocker(batcher, backend)
    tasks = [submit(batcher, request(1, start=i)) for i in range(10)]
    await settle()
    backend.release()
    await results([blocker, *tasks])
    assert backend.batch_rows == [1, 4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([b["x"] for b in backend.batches[1:]]), block(10))


async def test_requests_with_different_shapes_or_dtypes_are_not_merged(make: Factory) -> None:
    backend = FakeBackend()
    batcher = await make([backend], BatchingPolicy(max_batch_size=8))
    blocker = await hold_with_blocker(batcher, backend)
    inputs = [
        request(1, 0, width=4),
        request(1, 1, width=4),
        request(1, 2, width=5),  # other shape: closes the first batch, FIFO
        request(1, 3, width=4, dtype=np.float64),  # other dtype
        request(1, 4, width=4, dtype=np.float64),
    ]
    tasks = [submit(batcher, x) for x in inputs]
    await settle()
    backend.release()
    done = await results([blocker, *tasks])
    assert [(b["x"].shape, b["x"].dtype) for b in backend.batches[1:]] == [
        ((2, 4), np.dtype(np.float32)),
        ((1, 5), np.dtype(np.float32)),
        ((2, 4), np.dtype(np.float64)),
    ]
    for result, x in zip(done[1:], inputs, strict=True):
        np.testing.assert_array_equal(result.outputs["x_out"], x["x"] * 2)


async def test_preferred_size_dispatches_without_waiting_the_delay(make: Factory) -> None:
    backend = FakeBackend()
    policy = BatchingPolicy(max_batch_size=8, preferred_batch_sizes=(2,), max_queue_delay_s=100.0)
    batcher = await make([backend], policy)
    blocker = await hold_with_blocker(batcher, backend, rows=2)  # a preferred size: goes at once
    tasks = [submit(batcher, request(1, start=i)) for i in range(3)]
    await settle()
    backend.release()
    await results([blocker, *tasks[:2]])  # 3 rows queued: the preferred prefix of 2 goes at once
    assert backend.batch_rows == [2, 2]
    assert not tasks[2].done() and batcher.queue_depth == 1  # the rest waits for the 100 s delay
    await asyncio.wait_for(batcher.drain(), LONG)  # draining flushes without waiting for the delay
    assert (await tasks[2]).batch_rows == 1
    assert backend.batch_rows == [2, 2, 1]


async def test_strict_delay_the_oldest_request_waits_max_queue_delay_then_the_batch_goes(
    make: Factory,
) -> None:
    clock, backend = FakeClock(), FakeBackend()
    delay = 0.0625  # exact in binary, so the fake clock lands on it exactly
    policy = BatchingPolicy(max_batch_size=8, max_queue_delay_s=delay, strict_delay=True)
    batcher = await make([backend], policy, clock=clock)
    first = submit(batcher, request(1, 0))
    await asyncio.sleep(3 * delay)  # real time passes, the fake clock does not: nothing may run
    clock.advance(delay / 2)
    second = submit(batcher, request(2, 1))
    await asyncio.sleep(3 * delay)
    assert backend.batches == [] and batcher.queue_depth == 2
    clock.advance(delay / 2)  # the oldest request has now waited exactly the delay
    r1, r2 = await results([first, second])
    assert backend.batch_rows == [3]
    assert r1.queue_ns == int(delay * 1e9) and r2.queue_ns == int(delay / 2 * 1e9)
    np.testing.assert_array_equal(r2.outputs["x_out"], block(2, 1) * 2)


async def test_strict_delay_lone_request_is_served_after_the_delay_on_the_real_clock(make: Factory) -> None:
    backend = FakeBackend()
    policy = BatchingPolicy(max_batch_size=8, max_queue_delay_s=0.05, strict_delay=True)
    batcher = await make([backend], policy)
    began = time.monotonic()
    result = await asyncio.wait_for(batcher.infer(request(1)), LONG)
    assert time.monotonic() - began >= 0.05 and result.queue_ns >= 50_000_000


async def test_work_conserving_a_free_instance_takes_a_lone_request_at_once(make: Factory) -> None:
    clock, backend = FakeClock(), FakeBackend()
    batcher = await make([backend], BatchingPolicy(max_batch_size=8, max_queue_delay_s=100.0), clock=clock)
    result = await asyncio.wait_for(batcher.infer(request(1)), LONG)  # the fake clock never moves
    assert backend.batch_rows == [1] and result.queue_ns == 0


async def test_work_conserving_batches_fill_while_every_instance_is_busy(make: Factory) -> None:
    clock, backend = FakeClock(), FakeBackend()
    batcher = await make([backend], BatchingPolicy(max_batch_size=4, max_queue_delay_s=100.0), clock=clock)
    blocker = await hold_with_blocker(batcher, backend)  # went at once: the instance was free
    tasks = [submit(batcher, request(1, start=i)) for i in range(6)]
    await settle()
    # busy: they wait, whatever the delay; the first 4 are full, so they go ahead to the busy instance
    assert batcher.queue_depth == 2 and batcher.in_flight == 1 + 4
    backend.release()
    await results([blocker, *tasks])  # freed: full batches, then the rest at once, no delay waited
    assert backend.batch_rows == [1, 4, 2]


async def test_work_conserving_waits_for_a_preferred_size_the_arrivals_will_reach(make: Factory) -> None:
    clock, backend = FakeClock(), FakeBackend()
    policy = BatchingPolicy(max_batch_size=8, preferred_batch_sizes=(4,), max_queue_delay_s=0.5)
    batcher = await make([backend], policy, clock=clock)
    first = await asyncio.wait_for(batcher.infer(request(1, 0)), LONG)  # no arrival rate yet: at once
    assert first.queue_ns == 0
    clock.advance(0.001)
    tasks = [submit(batcher, request(1, 1))]
    await settle()  # one row per ms: 3 more rows within the 0.5 s delay reach the preferred 4
    assert batcher.queue_depth == 1 and backend.batch_rows == [1]
    for i in range(2, 5):
        clock.advance(0.001)
        tasks.append(submit(batcher, request(1, i)))
        await settle()
    await results(tasks)
    assert backend.batch_rows == [1, 4]


async def test_work_conserving_does_not_wait_for_a_preferred_size_out_of_reach(make: Factory) -> None:
    clock, backend = FakeClock(), FakeBackend()
    policy = BatchingPolicy(max_batch_size=8, preferred_batch_sizes=(4,), max_queue_delay_s=0.5)
    batcher = await make([backend], policy, clock=clock)
    for i in range(3):
        clock.advance(1.0)  # one row a second: nothing more arrives within 0.5 s
        result = await asyncio.wait_for(batcher.infer(request(1, i)), LONG)
        assert result.queue_ns == 0
    assert backend.batch_rows == [1, 1, 1]


async def test_work_conserving_waits_out_a_delay_that_is_cheap_next_to_the_batch_time(make: Factory) -> None:
    clock = FakeClock()
    delay = 0.0625

    def one_second_batch(inputs: TensorMap) -> dict[str, Array]:
        clock.advance(1.0)  # the batch "takes" 1 s: the delay is 6 % of it
        return {"x_out": np.asarray(inputs["x"]) * 2}

    backend = FakeBackend(one_second_batch)
    batcher = await make([backend], BatchingPolicy(max_batch_size=8, max_queue_delay_s=delay), clock=clock)
    await asyncio.wait_for(batcher.infer(request(1, 0)), LONG)  # nothing measured yet: at once
    task = submit(batcher, request(1, 1))
    await asyncio.sleep(3 * delay)  # real time passes, the fake clock does not: it waits for company
    assert batcher.queue_depth == 1 and backend.batch_rows == [1]
    clock.advance(delay)
    assert (await results([task]))[0].queue_ns == int(delay * 1e9)


async def test_a_tiny_model_runs_inline_on_the_loop_and_a_slow_one_in_its_thread(make: Factory) -> None:
    clock = FakeClock()
    threads: list[str] = []

    def timed(cost_s: float) -> Callable[[TensorMap], dict[str, Array]]:
        def transform(inputs: TensorMap) -> dict[str, Array]:
            threads.append(threading.current_thread().name)
            clock.advance(cost_s)  # the batch "takes" cost_s on the batcher's clock
            return {"x_out": np.asarray(inputs["x"]) * 2}

        return transform

    fast = await make(
        [FakeBackend(timed(1e-5))], BatchingPolicy(max_batch_size=8), clock=clock, inline_below_s=1e-4
    )
    slow = await make(
        [FakeBackend(timed(1e-3))], BatchingPolicy(max_batch_size=8), clock=clock, inline_below_s=1e-4
    )
    for batcher in (fast, slow):
        assert not batcher.runs_inline  # nothing measured yet: the first batch goes to the thread
        for i in range(3):
            await asyncio.wait_for(batcher.infer(request(1, i)), LONG)
    loop_thread = threading.current_thread().name
    assert threads[:3] == [threads[0], loop_thread, loop_thread] and threads[0] != loop_thread
    assert loop_thread not in threads[3:]
    assert fast.runs_inline and not slow.runs_inline


async def test_an_inline_model_returns_to_its_thread_only_well_above_the_threshold(make: Factory) -> None:
    clock = FakeClock()
    costs = [1e-5] * 2 + [1.8e-4] * 10 + [1e-3] * 10  # threshold 1e-4: inline, then 1.8x, then 10x

    def transform(inputs: TensorMap) -> dict[str, Array]:
        clock.advance(costs.pop(0))
        return {"x_out": np.asarray(inputs["x"]) * 2}

    batcher = await make(
        [FakeBackend(transform)], BatchingPolicy(max_batch_size=8), clock=clock, inline_below_s=1e-4
    )
    seen = []
    for i in range(22):
        await asyncio.wait_for(batcher.infer(request(1, i)), LONG)
        seen.append(batcher.runs_inline)
    # the average of 1.8x the threshold (≈ 1.6e-4 after ten batches) keeps an inline model inline, so
    # preempted batches on a busy machine do not flip it; 10x sends it back to its thread
    assert seen[:12] == [True] * 12 and seen[-1] is False


class BufferedBackend(FakeBackend):
    """Gives the batcher its own arrays to merge into (as the torch backend gives pinned memory on a GPU),
    and notes for every batch whether its input arrived in one of them."""

    def __init__(self) -> None:
        super().__init__(self._note)
        self.buffers: list[Array] = []
        self.in_buffer: list[bool] = []

    def host_buffer(self, name: str, shape: tuple[int, ...], dtype: np.dtype[Any]) -> Array | None:
        self.buffers.append(np.empty(shape, dtype))
        return self.buffers[-1]

    def _note(self, inputs: TensorMap) -> dict[str, Array]:
        self.in_buffer.append(any(inputs["x"] is buffer for buffer in self.buffers))
        return double(inputs)


async def test_a_merged_batch_reaches_the_backend_in_its_own_buffer(make: Factory) -> None:
    backend = BufferedBackend()
    batcher = await make([backend], BatchingPolicy(max_batch_size=8, max_queue_delay_s=100.0))
    blocker = await hold_with_blocker(batcher, backend)  # alone: passed through, nothing merged
    tasks = [submit(batcher, request(1, start=i)) for i in range(3)]
    await settle()
    backend.release()
    answers = await results([blocker, *tasks])
    assert backend.batch_rows == [1, 3] and backend.in_buffer == [False, True]
    for i, answer in enumerate(answers[1:]):
        np.testing.assert_array_equal(answer.outputs["x_out"], block(1, i) * 2)


async def test_two_instances_run_batches_in_parallel(make: Factory) -> None:
    backends = [FakeBackend(), FakeBackend()]
    batcher = await make(backends, BatchingPolicy(max_batch_size=4))
    for backend in backends:
        backend.hold()
    tasks = [submit(batcher, request(1, 0))]
    await settle()
    tasks.append(submit(batcher, request(1, 1)))
    for backend in backends:
        await backend.wait_started(1)  # both held inside infer at the same time
    assert batcher.in_flight == 2 and batcher.queue_depth == 0
    for backend in backends:
        backend.release()
    await results(tasks)
    assert sorted(len(b.batches) for b in backends) == [1, 1]


async def test_a_busy_instance_takes_one_batch_ahead_only_when_waiting_cannot_change_it(
    make: Factory,
) -> None:
    backend = FakeBackend()
    batcher = await make([backend], BatchingPolicy(max_batch_size=4, max_queue_delay_s=100.0))
    blocker = await hold_with_blocker(batcher, backend)
    tasks = [submit(batcher, request(1, start=i)) for i in range(3)]
    await settle()
    assert batcher.queue_depth == 3 and batcher.in_flight == 1  # 3 rows could still grow: they wait
    tasks += [submit(batcher, request(1, start=i)) for i in range(3, 8)]
    await settle()
    # 4 rows are full: ahead, behind the running batch; the next 4 wait (one batch ahead at most)
    assert batcher.queue_depth == 4 and batcher.in_flight == 1 + 4
    backend.release()
    answers = await results([blocker, *tasks])
    assert backend.batch_rows == [1, 4, 4] and backend.max_active == 1
    for i, answer in enumerate(answers[1:]):
        np.testing.assert_array_equal(answer.outputs["x_out"], block(1, i) * 2)


async def test_a_batch_handed_over_ahead_is_queued_until_it_starts(make: Factory) -> None:
    clock, backend = FakeClock(), FakeBackend()
    batcher = await make([backend], BatchingPolicy(max_batch_size=2), clock=clock)
    blocker = await hold_with_blocker(batcher, backend)
    ahead = [submit(batcher, request(1, start=i)) for i in range(2)]
    await settle()
    assert batcher.queue_depth == 0  # handed over at once, behind the held batch
    clock.advance(1.5)  # the held batch takes 1.5 s on the batcher's clock
    backend.release()
    answers = await results([blocker, *ahead])
    assert [a.queue_ns for a in answers[1:]] == [1_500_000_000] * 2 and backend.batch_rows == [1, 2]


async def test_each_instance_has_its_own_thread_and_never_runs_two_batches_at_once(make: Factory) -> None:
    names: list[set[str]] = [set(), set()]

    def noting(index: int) -> Callable[[TensorMap], dict[str, Array]]:
        def transform(inputs: TensorMap) -> dict[str, Array]:
            names[index].add(threading.current_thread().name)
            return double(inputs)

        return transform

    backends = [FakeBackend(noting(0)), FakeBackend(noting(1))]
    batcher = await make(backends, BatchingPolicy(max_batch_size=2))
    for backend in backends:
        backend.hold()
    tasks = []
    for i, backend in enumerate(backends):  # one request each, alone: the free instance takes it
        tasks.append(submit(batcher, request(1, i)))
        await backend.wait_started(1)
    tasks += [submit(batcher, request(2, 2 + 2 * i)) for i in range(4)]  # full: one ahead per instance
    await settle()
    assert batcher.in_flight == 2 + 2 and batcher.queue_depth == 2  # requests, not rows
    for backend in backends:
        backend.release()
    await results(tasks)
    assert [b.max_active for b in backends] == [1, 1]
    assert sum(len(b.batches) for b in backends) == 6
    assert all(len(n) == 1 for n in names) and names[0] != names[1]


async def test_max_batch_size_zero_runs_each_request_alone_as_given(make: Factory) -> None:
    backend = FakeBackend()
    batcher = await make([backend], BatchingPolicy(max_batch_size=0, max_queue_delay_s=100.0))
    backend.hold()
    first = submit(batcher, {"x": np.ones((), dtype=np.float32)})  # no batch dimension at all
    await backend.wait_started(1)
    tasks = [submit(batcher, {"x": block(1, i).ravel()}) for i in range(2)]  # same shapes: still alone
    await settle()
    assert batcher.queue_depth == 1 and batcher.in_flight == 2  # one request alone can go ahead
    backend.release()
    done = await results([first, *tasks])
    assert [b["x"].shape for b in backend.batches] == [(), (2,), (2,)]
    np.testing.assert_array_equal(done[2].outputs["x_out"], block(1, 1).ravel() * 2)
    assert [r.batch_rows for r in done] == [1, 1, 1] and backend.max_active == 1


# ---- backpressure, deadlines, cancellation -----------------------------------------------------------


async def test_full_queue_rejects_at_once_and_the_others_complete(make: Factory) -> None:
    backend, observer = FakeBackend(), RecordingObserver()
    batcher = await make([backend], BatchingPolicy(max_batch_size=8, max_queue_size=2), observer=observer)
    blocker = await hold_with_blocker(batcher, backend)  # running, so not counted as queued
    tasks = [submit(batcher, request(1, i)) for i in range(2)]
    await settle()
    with pytest.raises(QueueFull, match="max_queue_size 2"):
        await batcher.infer(request(1, 5))
    assert observer.rejected == ["queue_full"]
    backend.release()
    await results([blocker, *tasks])
    assert backend.batch_rows == [1, 2]


async def test_deadline_passed_while_queued_never_reaches_the_model(make: Factory) -> None:
    clock, backend, observer = FakeClock(), FakeBackend(), RecordingObserver()
    batcher = await make([backend], BatchingPolicy(max_batch_size=8), clock=clock, observer=observer)
    blocker = await hold_with_blocker(batcher, backend)
    late = submit(batcher, request(1, 7), deadline=clock() + 1.0)
    on_time = submit(batcher, request(1, 3), deadline=clock() + 5.0)
    await settle()
    clock.advance(2.0)
    backend.release()
    with pytest.raises(DeadlineExceeded, match="^Deadline Exceeded$"):
        await asyncio.wait_for(late, LONG)
    await results([blocker, on_time])
    assert backend.batch_rows == [1, 1]
    np.testing.assert_array_equal(backend.batches[1]["x"], block(1, 3))
    assert observer.rejected == ["deadline"]


async def test_expired_request_fails_while_every_instance_is_still_busy(make: Factory) -> None:
    backend = FakeBackend()
    batcher = await make([backend], BatchingPolicy(max_batch_size=8))
    blocker = await hold_with_blocker(batcher, backend)
    with pytest.raises(DeadlineExceeded):
        await asyncio.wait_for(batcher.infer(request(1), deadline=time.monotonic() + 0.05), LONG)
    assert not blocker.done() and batcher.queue_depth == 0  # the scheduler woke up for the expiry
    backend.release()
    await results([blocker])


@pytest.mark.parametrize(
    ("default_timeout_s", "allow_override", "requested_s", "expected"),
    [
        (None, False, None, None),
        (2.0, False, 1.0, 2.0),
        (2.0, True, None, 2.0),
        (2.0, True, 0.0, 2.0),
        (2.0, True, 1.0, 1.0),
        (2.0, True, 3.0, 2.0),
        (None, True, 3.0, 3.0),
    ],
)
def test_queue_timeout_choice(
    default_timeout_s: float | None, allow_override: bool, requested_s: float | None, expected: float | None
) -> None:
    policy = BatchingPolicy(
        max_batch_size=8, default_timeout_s=default_timeout_s, allow_timeout_override=allow_override
    )
    assert policy.queue_timeout(requested_s) == expected


async def test_negative_timeout_is_invalid(make: Factory) -> None:
    batcher = await make([FakeBackend()], BatchingPolicy(max_batch_size=8, allow_timeout_override=True))
    with pytest.raises(InvalidInput, match="timeout must be >= 0"):
        await batcher.infer(request(1), timeout_s=-1.0)


async def test_deadline_already_passed_is_rejected_at_once(make: Factory) -> None:
    clock, backend = FakeClock(), FakeBackend()
    batcher = await make([backend], BatchingPolicy(max_batch_size=8), clock=clock)
    with pytest.raises(DeadlineExceeded, match="^Deadline Exceeded$"):
        await batcher.infer(request(1), deadline=clock() - 1.0)
    assert backend.batches == []


@pytest.mark.parametrize(
    ("default_timeout_s", "allow_override", "timeout_s", "expires"),
    [
        (1.0, False, None, True),  # default queue timeout
        (4.0, True, 1.0, True),  # a shorter override wins
        (None, True, 1.0, True),  # ... also when there is no default
        (1.0, True, 4.0, True),  # a longer one cannot extend the default (Triton)
        (4.0, True, 0.0, False),  # 0 = not set: the default applies
        (None, False, 1.0, False),  # override ignored when not allowed
        (4.0, False, 1.0, False),  # ... even when shorter than the default
    ],
)
async def test_queue_timeout(
    make: Factory,
    default_timeout_s: float | None,
    allow_override: bool,
    timeout_s: float | None,
    expires: bool,
) -> None:
    clock, backend = FakeClock(), FakeBackend()
    policy = BatchingPolicy(
        max_batch_size=8, default_timeout_s=default_timeout_s, allow_timeout_override=allow_override
    )
    batcher = await make([backend], policy, clock=clock)
    blocker = await hold_with_blocker(batcher, backend)
    task = submit(batcher, request(1, 3), timeout_s=timeout_s)
    await settle()
    clock.advance(2.0)
    backend.release()
    await results([blocker])
    if expires:
        with pytest.raises(DeadlineExceeded, match=r"^Request timeout expired \(queue timeout of 1 s"):
            await asyncio.wait_for(task, LONG)
        assert backend.batch_rows == [1]
    else:
        assert (await asyncio.wait_for(task, LONG)).queue_ns == 2_000_000_000
        assert backend.batch_rows == [1, 1]


async def test_cancelled_request_never_reaches_the_model(make: Factory) -> None:
    backend, observer = FakeBackend(), RecordingObserver()
    batcher = await make([backend], BatchingPolicy(max_batch_size=8), observer=observer)
    blocker = await hold_with_blocker(batcher, backend)
    first = submit(batcher, request(1, 1))
    victim = submit(batcher, request(1, 50))
    last = submit(batcher, request(1, 2))
    await settle()
    assert batcher.queue_depth == 3
    victim.cancel()
    await settle()
    assert victim.cancelled() and batcher.queue_depth == 2
    assert observer.rejected == ["cancelled"]
    backend.release()
    await results([blocker, first, last])
    assert backend.batch_rows == [1, 2]
    np.testing.assert_array_equal(backend.batches[1]["x"], np.concatenate([block(1, 1), block(1, 2)]))


async def test_cancelling_a_running_request_leaves_its_batch_mates_alone(make: Factory) -> None:
    clock, backend = FakeClock(), FakeBackend()
    delay = 0.0625
    batcher = await make([backend], BatchingPolicy(max_batch_size=8, max_queue_delay_s=delay), clock=clock)
    backend.hold()
    tasks = [submit(batcher, request(1, i)) for i in range(2)]
    await settle()
    clock.advance(delay)  # both go together, on the scheduler's own timer
    await backend.wait_started(1)
    assert batcher.in_flight == 2
    tasks[0].cancel()
    await settle()
    assert tasks[0].cancelled()
    backend.release()
    result = await asyncio.wait_for(tasks[1], LONG)
    np.testing.assert_array_equal(result.outputs["x_out"], block(1, 1) * 2)
    assert result.batch_rows == 2 and backend.batch_rows == [2]


# ---- failures ------------------------------------------------------------------------------------------


def fail_on_negative(inputs: TensorMap) -> dict[str, Array]:
    if (inputs["x"] < 0).any():
        raise RuntimeError("negative input: boom")
    return {"x_out": inputs["x"] * 2}


async def test_failing_batch_fails_only_its_own_requests(make: Factory) -> None:
    backend, observer = FakeBackend(fail_on_negative), RecordingObserver()
    batcher = await make([backend], BatchingPolicy(max_batch_size=8), observer=observer)
    blocker = await hold_with_blocker(batcher, backend)
    bad = submit(batcher, {"x": -block(1, 1)})
    bad_mate = submit(batcher, request(1, 2))  # same batch as `bad`: fails with it
    other = submit(batcher, request(1, 3, width=3))  # other shape: its own batch
    await settle()
    backend.release()
    for task in (bad, bad_mate):
        with pytest.raises(ModelExecutionError, match="^negative input: boom$"):
            await asyncio.wait_for(task, LONG)
    await results([blocker, other])
    assert (await asyncio.wait_for(batcher.infer(request(2)), LONG)).batch_rows == 2  # still serving
    assert backend.batch_rows == [1, 2, 1, 2]
    failed = [(rows, count, timings) for rows, count, timings, error in observer.batches if error]
    assert failed == [(2, 2, None)]


async def test_outputs_with_the_wrong_row_count_fail_the_batch(make: Factory) -> None:
    backend, observer = FakeBackend(lambda inputs: {"y": inputs["x"][:-1]}), RecordingObserver()
    batcher = await make([backend], BatchingPolicy(max_batch_size=8), observer=observer)
    with pytest.raises(ModelExecutionError, match="output 'y' has 1 rows but the batch has 2"):
        await asyncio.wait_for(batcher.infer(request(2)), LONG)
    assert observer.batches[0][2] is None and isinstance(observer.batches[0][3], ModelExecutionError)


# ---- drain ---------------------------------------------------------------------------------------------


async def test_drain_waits_for_queued_and_running_requests_then_refuses(make: Factory) -> None:
    backend = FakeBackend()
    batcher = await make([backend], BatchingPolicy(max_batch_size=8, max_queue_delay_s=100.0))
    blocker = await hold_with_blocker(batcher, backend, rows=8)  # full: goes at once
    queued = submit(batcher, request(1, 1))
    await settle()
    draining = asyncio.create_task(batcher.drain())
    await settle()
    assert not draining.done() and batcher.in_flight == 1 and batcher.queue_depth == 1
    with pytest.raises(Unavailable, match="draining"):
        await batcher.infer(request(1))
    backend.release()
    await asyncio.wait_for(draining, LONG)
    assert blocker.done() and queued.done() and queued.result().batch_rows == 1
    assert batcher.queue_depth == 0 and batcher.in_flight == 0
    with pytest.raises(Unavailable, match="draining"):
        await batcher.infer(request(1))


class ObserverThatRaisesOnDeadline(RecordingObserver):
    def on_rejected(self, reason: str) -> None:
        if reason == "deadline":
            raise RuntimeError("observer bug")


async def test_a_dead_scheduler_fails_closed_instead_of_hanging(make: Factory) -> None:
    clock, backend = FakeClock(), FakeBackend()
    observer = ObserverThatRaisesOnDeadline()
    batcher = await make([backend], BatchingPolicy(max_batch_size=8), clock=clock, observer=observer)
    blocker = await hold_with_blocker(batcher, backend)
    expired = submit(batcher, request(1, 1), deadline=clock() + 1.0)
    stranded = submit(batcher, request(1, 2))
    await settle()
    clock.advance(2.0)
    backend.release()
    with pytest.raises(DeadlineExceeded):
        await asyncio.wait_for(expired, LONG)
    with pytest.raises(Unavailable, match="batcher failed: observer bug"):
        await asyncio.wait_for(stranded, LONG)
    with pytest.raises(Unavailable, match="batcher failed"):
        await batcher.infer(request(1))
    await results([blocker])  # the running batch still completes
    assert backend.batch_rows == [1]
