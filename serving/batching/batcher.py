"""The dynamic batcher: one per loaded model version, with Triton's dynamic-batching semantics.

    infer() ─► admit (validate, deadline, QueueFull) ─► RequestQueue ─► scheduler task
       ▲                                                              │ drops expired / cancelled requests,
       │                                                              │ gathers a batch (choose_batch),
       │                                                              ▼ takes a free instance
    one future per request ◄─ split_outputs ◄─ backend.infer ◄─ merge_inputs  (worker thread per instance)

The pieces: `policy` decides when a gathered batch goes (choose_batch), `queue` admits requests and
tracks their deadlines, `tensors` merges and splits arrays; this module schedules batches onto free
instances and runs them. The scheduler sleeps until the earliest request expiry or the delay timer, or
until woken (new request, cancel, instance freed). While draining, nothing waits for the delay.

max_batch_size == 0: the model does not batch; each request runs alone, inputs as given, counted as 1 row.
The batcher never closes its backends: the owner (the registry) does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from serving.backends.base import Backend, ComputeTimings
from serving.batching.policy import BatchingPolicy, choose_batch
from serving.batching.queue import BatchObserver, NullObserver, QueuedRequest, RequestQueue, RequestResult
from serving.batching.tensors import merge_inputs, split_outputs
from serving.errors import ModelExecutionError, Unavailable
from serving.types import Array, TensorMap

__all__ = ["BatchObserver", "BatchingPolicy", "DynamicBatcher", "RequestResult"]

log = logging.getLogger(__name__)


class DynamicBatcher:
    """Queue + scheduler task + one future per request, over `len(instances)` parallel model instances."""

    def __init__(
        self,
        instances: Sequence[Backend],
        policy: BatchingPolicy,
        *,
        observer: BatchObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
        name: str = "model",
    ) -> None:
        if not instances:
            raise ValueError("a DynamicBatcher needs at least one backend instance")
        self._policy = policy
        self._observer: BatchObserver = observer or NullObserver()
        self._clock = clock
        self._name = name
        self._free: list[Backend] = list(instances)
        self._instances = len(instances)
        self._batch_s: float | None = None  # recent wall time of one batch (moving average)
        self._executor = ThreadPoolExecutor(max_workers=len(instances), thread_name_prefix=f"batch-{name}")
        self._queue = RequestQueue(policy, self._observer, clock, name)
        self._in_flight = 0
        self._running: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._scheduler: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None
        self._draining = False
        self._closed = False

    @property
    def queue_depth(self) -> int:
        return self._queue.depth

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def start(self) -> None:
        if self._closed:
            raise Unavailable(f"{self._name} is closed")
        if self._scheduler is None:
            self._scheduler = asyncio.create_task(self._schedule(), name=f"batcher-{self._name}")
            self._scheduler.add_done_callback(self._on_scheduler_done)

    async def infer(
        self, inputs: TensorMap, *, deadline: float | None = None, timeout_s: float | None = None
    ) -> RequestResult:
        self._check_accepting()
        pending = self._queue.admit(inputs, deadline, timeout_s, self._wait_estimate)
        self._update_idle()
        self._wake.set()
        try:
            return await pending.future
        except asyncio.CancelledError:
            self._queue.drop(pending, "cancelled")
            self._wake.set()
            self._update_idle()
            raise

    async def drain(self) -> None:
        """Stop accepting; return once every queued and running request has finished."""
        self._draining = True
        self._wake.set()
        await self._idle.wait()

    async def close(self) -> None:
        if self._closed:
            return
        await self.drain()
        self._closed = True
        if self._scheduler is not None:
            self._scheduler.cancel()
            await asyncio.wait([self._scheduler])
        await asyncio.to_thread(self._executor.shutdown, True)

    def _wait_estimate(self, rows: int) -> float:
        """Seconds until a request of `rows` rows queued now is answered: the batches ahead of it and
        its own, spread over the instances, each the recent batch time; half a batch more when every
        instance is busy. 0 until a batch has run (nothing measured yet)."""
        if self._batch_s is None:
            return 0.0
        if self._policy.batching:
            batches = math.ceil((self._queue.rows + rows) / self._policy.max_batch_size)
        else:
            batches = self._queue.depth + 1
        waves = math.ceil(batches / self._instances) + (0.5 if not self._free else 0.0)
        return waves * self._batch_s

    def _check_accepting(self) -> None:
        if self._failure is not None:
            raise Unavailable(f"{self._name} batcher failed: {self._failure}")
        if self._draining or self._closed:
            raise Unavailable(f"{self._name} is draining")
        if self._scheduler is None:
            raise Unavailable(f"{self._name} batcher is not started")

    def _update_idle(self) -> None:
        if self._queue.depth == 0 and self._in_flight == 0:
            self._idle.set()
        else:
            self._idle.clear()

    # ---- the scheduler task ----------------------------------------------------------------------

    async def _schedule(self) -> None:
        while True:
            self._wake.clear()
            wait_s = self._step(self._clock())
            if wait_s is None:
                await self._wake.wait()
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await self._wake.wait()

    def _step(self, now: float) -> float | None:
        """Drop what expired, dispatch what is ready; return seconds until the next timer (None: none)."""
        self._queue.expire(now)
        while self._free:
            batch = self._next_batch(now)
            if not batch:
                break
            self._dispatch(batch, now)
        self._update_idle()
        return self._next_timer(now)

    def _next_batch(self, now: float) -> list[QueuedRequest]:
        gathered, can_grow = self._queue.gather()  # max_batch_size 0: always one request, dispatched at once
        if not gathered:
            return []
        # the same sum as in _next_timer, so "expired" and "wait 0 s" always agree (no float spin)
        timer_expired = self._draining or now >= gathered[0].enqueued_at + self._policy.max_queue_delay_s
        rows = [p.rows for p in gathered]
        count = choose_batch(rows, self._policy, can_grow=can_grow, timer_expired=timer_expired)
        return self._queue.take(count)

    def _next_timer(self, now: float) -> float | None:
        expiry = self._queue.next_expiry()
        times = [expiry] if expiry is not None else []
        head = self._queue.head_enqueued_at()
        if self._free and head is not None and self._policy.batching:
            times.append(head + self._policy.max_queue_delay_s)
        return max(0.0, min(times) - now) if times else None

    def _dispatch(self, batch: list[QueuedRequest], now: float) -> None:
        instance = self._free.pop()
        self._in_flight += len(batch)
        task = asyncio.create_task(self._run_batch(instance, batch, now))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    def _on_scheduler_done(self, task: asyncio.Task[None]) -> None:
        """Fail closed if the scheduler dies (a bug, or an observer that raised): nothing may hang."""
        if task.cancelled() or task.exception() is None:
            return
        failure = self._failure = task.exception()
        log.error("batcher for %s failed", self._name, exc_info=failure)
        self._queue.fail_all(lambda: Unavailable(f"{self._name} batcher failed: {failure}"))
        self._update_idle()

    # ---- running one batch -----------------------------------------------------------------------

    async def _run_batch(self, instance: Backend, batch: list[QueuedRequest], started_at: float) -> None:
        rows = sum(p.rows for p in batch)
        loop = asyncio.get_running_loop()
        begun = self._clock()
        try:
            parts, timings = await loop.run_in_executor(
                self._executor, self._execute, instance, [p.inputs for p in batch], [p.rows for p in batch]
            )
            took = self._clock() - begun
            self._batch_s = took if self._batch_s is None else 0.8 * self._batch_s + 0.2 * took
        except Exception as exc:
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(_execution_error(exc))
            self._observer.on_batch(rows, len(batch), None, exc)
        else:
            for pending, outputs in zip(batch, parts, strict=True):
                if not pending.future.done():
                    queue_ns = int((started_at - pending.enqueued_at) * 1e9)
                    result = RequestResult(
                        outputs=outputs, queue_ns=queue_ns, timings=timings, batch_rows=rows
                    )
                    pending.future.set_result(result)
            self._observer.on_batch(rows, len(batch), timings, None)
        finally:
            self._in_flight -= len(batch)
            self._free.append(instance)
            self._update_idle()
            self._wake.set()

    def _execute(
        self, instance: Backend, requests: list[TensorMap], row_counts: list[int]
    ) -> tuple[list[dict[str, Array]], ComputeTimings]:
        """Runs in a worker thread: merge, run the model, split."""
        if not self._policy.batching:
            result = instance.infer(requests[0])
            return [dict(result.outputs)], result.timings
        result = instance.infer(merge_inputs(requests))
        return split_outputs(result.outputs, row_counts), result.timings


def _execution_error(exc: Exception) -> ModelExecutionError:
    """A fresh error per request (one exception object must not be raised in several tasks)."""
    error = ModelExecutionError(str(exc) or type(exc).__name__)
    error.__cause__ = exc
    return error
