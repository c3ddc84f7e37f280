"""The dynamic batcher: one per loaded model version, with Triton's dynamic-batching semantics.

    infer() ─► admit (validate, deadline, QueueFull) ─► FIFO queue ─► scheduler task
       ▲                                                              │ drops expired / cancelled requests,
       │                                                              │ gathers a batch (choose_batch),
       │                                                              ▼ takes a free instance
    one future per request ◄─ split_outputs ◄─ backend.infer ◄─ merge_inputs  (worker thread per instance)

When a batch goes (`choose_batch`): requests are gathered FIFO while every input has the first request's
non-batch shape and dtype and the rows stay ≤ max_batch_size; the first request that does not fit closes
the batch (no reordering past it). The gathered batch is dispatched at once when it is full (max_batch_size
rows), when its rows are a preferred size, when some request boundary inside it reaches a preferred size
(the largest such prefix goes; the rest waits), or when it cannot grow (the next queued request does not fit).
Otherwise it waits until its oldest request has been queued max_queue_delay_s (0 = dispatch at once).
While draining, nothing waits for the delay.

A request leaves the queue without reaching the model when its caller cancels it or when its effective
deadline passes: min(the caller's absolute `deadline`, enqueue + queue timeout). The scheduler sleeps until
the earliest of those expiries or of the delay timer, or until woken (new request, cancel, instance freed).

max_batch_size == 0: the model does not batch; each request runs alone, inputs as given, counted as 1 row.
The batcher never closes its backends: the owner (the registry) does.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from serving.backends.base import Backend, ComputeTimings
from serving.batching.tensors import batch_signature, merge_inputs, request_rows, split_outputs
from serving.errors import DeadlineExceeded, InvalidInput, ModelExecutionError, QueueFull, Unavailable
from serving.types import Array, TensorMap

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchingPolicy:
    """Triton's dynamic_batching settings for one model version (times in seconds)."""

    max_batch_size: int  # rows; 0 = the model does not batch: each request runs alone, as is
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_s: float = 0.0  # how long the OLDEST queued request may wait for a fuller batch
    max_queue_size: int = 0  # queued (not yet running) requests; 0 = unbounded
    default_timeout_s: float | None = None  # queue timeout (Triton default_timeout_microseconds)
    allow_timeout_override: bool = False  # a request may shorten its queue timeout (never extend it)

    def __post_init__(self) -> None:
        if self.max_batch_size < 0:
            raise ValueError(f"max_batch_size must be >= 0, got {self.max_batch_size}")
        for size in self.preferred_batch_sizes:
            if size <= 0:
                raise ValueError(f"preferred_batch_sizes must be positive, got {size}")
            if size > self.max_batch_size:
                raise ValueError(
                    f"preferred_batch_sizes entry {size} exceeds max_batch_size {self.max_batch_size}"
                )
        if len(set(self.preferred_batch_sizes)) != len(self.preferred_batch_sizes):
            raise ValueError(f"preferred_batch_sizes has duplicates: {self.preferred_batch_sizes}")
        if not (self.max_queue_delay_s >= 0 and math.isfinite(self.max_queue_delay_s)):
            raise ValueError(f"max_queue_delay_s must be finite and >= 0, got {self.max_queue_delay_s}")
        if self.max_queue_size < 0:
            raise ValueError(f"max_queue_size must be >= 0 (0 = unbounded), got {self.max_queue_size}")
        if self.default_timeout_s is not None and not self.default_timeout_s > 0:
            raise ValueError(f"default_timeout_s must be > 0 or None, got {self.default_timeout_s}")

    @property
    def batching(self) -> bool:
        return self.max_batch_size > 0

    def queue_timeout(self, requested_s: float | None) -> float | None:
        """One request's queue timeout, as Triton's PriorityQueue: the request's own (None or 0 = not
        set) counts only with allow_timeout_override, and only to shorten the default, never extend it."""
        if requested_s and self.allow_timeout_override:
            return min(requested_s, self.default_timeout_s or math.inf)
        return self.default_timeout_s


@dataclass(frozen=True)
class RequestResult:
    outputs: dict[str, Array]  # this request's rows only
    queue_ns: int  # enqueue → batch start
    timings: ComputeTimings  # of the batch it ran in
    batch_rows: int  # rows in that batch (1 when the model does not batch)


class BatchObserver(Protocol):
    """Statistics and metrics hook, called on the event loop. It must not raise: if it does on the
    scheduler's path, the batcher fails closed (queued and new requests get Unavailable)."""

    def on_batch(
        self, rows: int, requests: int, timings: ComputeTimings | None, error: BaseException | None
    ) -> None: ...

    def on_rejected(self, reason: str) -> None:  # "queue_full" | "deadline" | "cancelled"
        ...


class _NullObserver:
    def on_batch(
        self, rows: int, requests: int, timings: ComputeTimings | None, error: BaseException | None
    ) -> None:
        pass

    def on_rejected(self, reason: str) -> None:
        pass


# ---- pure functions: batch choice (merge/split live in serving/batching/tensors.py) --------------------


def choose_batch(
    row_counts: Sequence[int], policy: BatchingPolicy, *, can_grow: bool, timer_expired: bool
) -> int:
    """How many of the gathered requests (FIFO, compatible, ≤ max rows) to dispatch now; 0 = wait."""
    total = sum(row_counts)
    preferred = policy.preferred_batch_sizes
    if total >= policy.max_batch_size or total in preferred:
        return len(row_counts)
    best = 0
    for count, rows in enumerate(itertools.accumulate(row_counts), start=1):
        if rows in preferred:
            best = count
    if best:
        return best
    return len(row_counts) if timer_expired or not can_grow else 0


# ---- scheduling ------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Pending:
    inputs: TensorMap
    rows: int
    signature: Hashable
    future: asyncio.Future[RequestResult]
    enqueued_at: float
    deadline: float | None  # the caller's absolute deadline
    queue_deadline: float | None  # enqueue + queue timeout
    queued: bool = True  # False once dispatched or dropped

    @property
    def expires_at(self) -> float | None:
        times = [t for t in (self.deadline, self.queue_deadline) if t is not None]
        return min(times) if times else None

    @property
    def live(self) -> bool:
        return self.queued and not self.future.done()

    def expiry_error(self, now: float) -> DeadlineExceeded:
        if self.deadline is not None and now >= self.deadline:
            return DeadlineExceeded("request deadline exceeded while queued for a batch")
        timeout = (self.queue_deadline or 0.0) - self.enqueued_at
        return DeadlineExceeded(f"queue timeout of {timeout:g} s exceeded while queued for a batch")


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
        self._observer: BatchObserver = observer or _NullObserver()
        self._clock = clock
        self._name = name
        self._free: list[Backend] = list(instances)
        self._executor = ThreadPoolExecutor(max_workers=len(instances), thread_name_prefix=f"batch-{name}")
        self._queue: deque[_Pending] = deque()  # FIFO; may hold dropped entries until they reach the head
        self._expiries: list[tuple[float, int, _Pending]] = []  # heap; lazily cleaned
        self._seq = itertools.count()
        self._queued = 0
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
        return self._queued

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
        pending = self._admit(inputs, deadline, timeout_s)
        try:
            return await pending.future
        except asyncio.CancelledError:
            self._drop(pending, "cancelled")
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

    # ---- admission -------------------------------------------------------------------------------

    def _admit(self, inputs: TensorMap, deadline: float | None, timeout_s: float | None) -> _Pending:
        self._check_accepting()
        policy = self._policy
        rows = request_rows(inputs, policy.max_batch_size) if policy.batching else 1
        if timeout_s is not None and not timeout_s >= 0:
            raise InvalidInput(f"timeout must be >= 0 seconds (0 = not set), got {timeout_s}")
        now = self._clock()
        if deadline is not None and now >= deadline:
            self._observer.on_rejected("deadline")
            raise DeadlineExceeded("request deadline exceeded before it was queued")
        if policy.max_queue_size and self._queued >= policy.max_queue_size:
            self._observer.on_rejected("queue_full")
            raise QueueFull(f"{self._name} queue is full (max_queue_size {policy.max_queue_size})")
        timeout = policy.queue_timeout(timeout_s)
        pending = _Pending(
            inputs=inputs,
            rows=rows,
            signature=batch_signature(inputs) if policy.batching else None,
            future=asyncio.get_running_loop().create_future(),
            enqueued_at=now,
            deadline=deadline,
            queue_deadline=now + timeout if timeout is not None else None,
        )
        self._queue.append(pending)
        self._queued += 1
        if pending.expires_at is not None:
            heapq.heappush(self._expiries, (pending.expires_at, next(self._seq), pending))
        self._update_idle()
        self._wake.set()
        return pending

    def _check_accepting(self) -> None:
        if self._failure is not None:
            raise Unavailable(f"{self._name} batcher failed: {self._failure}")
        if self._draining or self._closed:
            raise Unavailable(f"{self._name} is draining")
        if self._scheduler is None:
            raise Unavailable(f"{self._name} batcher is not started")

    def _drop(self, pending: _Pending, reason: str | None) -> None:
        """Take a request out of the queue count (dispatched when reason is None); idempotent."""
        if not pending.queued:
            return
        pending.queued = False
        self._queued -= 1
        if reason is not None:
            self._observer.on_rejected(reason)

    def _update_idle(self) -> None:
        if self._queued == 0 and self._in_flight == 0:
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
        self._expire(now)
        while self._free:
            batch = self._next_batch(now)
            if not batch:
                break
            self._dispatch(batch, now)
        self._update_idle()
        return self._next_timer(now)

    def _expire(self, now: float) -> None:
        while self._expiries and self._expiries[0][0] <= now:
            _, _, pending = heapq.heappop(self._expiries)
            if pending.future.done():
                self._drop(pending, "cancelled")
            elif pending.queued:
                pending.future.set_exception(pending.expiry_error(now))
                self._drop(pending, "deadline")

    def _next_batch(self, now: float) -> list[_Pending]:
        while self._queue and not self._queue[0].live:
            self._drop(self._queue.popleft(), "cancelled")
        if not self._queue:
            return []
        gathered, can_grow = self._gather()  # max_batch_size 0: always one request, dispatched at once
        # the same sum as in _next_timer, so "expired" and "wait 0 s" always agree (no float spin)
        timer_expired = self._draining or now >= gathered[0].enqueued_at + self._policy.max_queue_delay_s
        rows = [p.rows for p in gathered]
        return self._take(choose_batch(rows, self._policy, can_grow=can_grow, timer_expired=timer_expired))

    def _gather(self) -> tuple[list[_Pending], bool]:
        """The live requests from the head that may share a batch, and whether more could still join."""
        gathered: list[_Pending] = []
        rows = 0
        for pending in self._queue:
            if not pending.live:
                continue
            if gathered and (
                pending.signature != gathered[0].signature
                or rows + pending.rows > self._policy.max_batch_size
            ):
                return gathered, False
            gathered.append(pending)
            rows += pending.rows
        return gathered, rows < self._policy.max_batch_size

    def _take(self, count: int) -> list[_Pending]:
        """Pop the first `count` live requests off the queue, dropping dead entries passed on the way."""
        taken: list[_Pending] = []
        while len(taken) < count:
            pending = self._queue.popleft()
            if pending.live:
                self._drop(pending, None)
                taken.append(pending)
            else:
                self._drop(pending, "cancelled")
        return taken

    def _next_timer(self, now: float) -> float | None:
        while self._expiries and not self._expiries[0][2].queued:
            heapq.heappop(self._expiries)
        times = [self._expiries[0][0]] if self._expiries else []
        if self._free and self._queue and self._policy.batching:
            times.append(self._queue[0].enqueued_at + self._policy.max_queue_delay_s)
        return max(0.0, min(times) - now) if times else None

    def _dispatch(self, batch: list[_Pending], now: float) -> None:
        instance = self._free.pop()
        self._in_flight += len(batch)
        task = asyncio.create_task(self._run_batch(instance, batch, now))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    def _on_scheduler_done(self, task: asyncio.Task[None]) -> None:
        """Fail closed if the scheduler dies (a bug, or an observer that raised): nothing may hang."""
        if task.cancelled() or task.exception() is None:
            return
        self._failure = task.exception()
        log.error("batcher for %s failed", self._name, exc_info=self._failure)
        for pending in self._queue:
            if not pending.future.done():
                pending.future.set_exception(Unavailable(f"{self._name} batcher failed: {self._failure}"))
            self._drop(pending, None)
        self._queue.clear()
        self._update_idle()

    # ---- running one batch -----------------------------------------------------------------------

    async def _run_batch(self, instance: Backend, batch: list[_Pending], started_at: float) -> None:
        rows = sum(p.rows for p in batch)
        loop = asyncio.get_running_loop()
        try:
            parts, timings = await loop.run_in_executor(
                self._executor, self._execute, instance, [p.inputs for p in batch], [p.rows for p in batch]
            )
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
