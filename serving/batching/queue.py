"""The batcher's queue: admission and backpressure, deadlines, and the FIFO that batches are taken from.

A request leaves the queue without reaching the model when its caller cancels it or when its effective
deadline passes: min(the caller's absolute `deadline`, enqueue + queue timeout). Dropped entries stay in
the FIFO until they reach its head (cheap removal); `depth` counts only the live ones. Used on the event
loop only, by one DynamicBatcher.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Protocol

from serving.backends.base import ComputeTimings
from serving.batching.policy import BatchingPolicy
from serving.batching.tensors import batch_signature, request_rows
from serving.errors import DeadlineExceeded, InvalidInput, QueueFull
from serving.types import Array, TensorMap

# The caller's deadline passed: gRPC's own words, so a client reads the same text whether its timer or
# the server's fired first. A queue timeout (the model's queue policy) uses Triton's words instead.
DEADLINE_TEXT = "Deadline Exceeded"


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

    def on_rejected(self, reason: str) -> None:  # "queue_full" | "deadline" | "unmeetable" | "cancelled"
        ...


class NullObserver:
    def on_batch(
        self, rows: int, requests: int, timings: ComputeTimings | None, error: BaseException | None
    ) -> None:
        pass

    def on_rejected(self, reason: str) -> None:
        pass


@dataclass(eq=False)
class QueuedRequest:
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
            return DeadlineExceeded(DEADLINE_TEXT)
        timeout = (self.queue_deadline or 0.0) - self.enqueued_at
        return DeadlineExceeded(f"Request timeout expired (queue timeout of {timeout:g} s, waiting to run)")


class RequestQueue:
    """FIFO of admitted requests, with a heap of their expiries (lazily cleaned)."""

    def __init__(
        self, policy: BatchingPolicy, observer: BatchObserver, clock: Callable[[], float], name: str
    ) -> None:
        self._policy = policy
        self._observer = observer
        self._clock = clock
        self._name = name
        self._fifo: deque[QueuedRequest] = deque()  # may hold dropped entries until they reach the head
        self._expiries: list[tuple[float, int, QueuedRequest]] = []
        self._seq = itertools.count()
        self._depth = 0
        self._rows = 0  # rows of the live queued requests
        self._last_admit: float | None = None
        self._row_gap_s: float | None = None  # moving average of the time between arriving rows

    @property
    def depth(self) -> int:
        """Queued requests that are still waiting (neither dispatched nor dropped)."""
        return self._depth

    @property
    def rows(self) -> int:
        """Rows of the queued requests that are still waiting."""
        return self._rows

    def expected_rows(self, seconds: float) -> float:
        """Rows expected to arrive within `seconds`, at the recent arrival rate (0 before two arrivals)."""
        gap = self._row_gap_s
        if gap is None or seconds <= 0:
            return 0.0
        return seconds / gap if gap > 0 else float("inf")

    def _arrived(self, now: float, rows: int) -> None:
        if self._last_admit is not None:
            gap = (now - self._last_admit) / rows
            self._row_gap_s = gap if self._row_gap_s is None else 0.8 * self._row_gap_s + 0.2 * gap
        self._last_admit = now

    def admit(
        self,
        inputs: TensorMap,
        deadline: float | None,
        timeout_s: float | None,
        wait_estimate: Callable[[int], float] | None = None,
    ) -> QueuedRequest:
        """Validate and enqueue one request; InvalidInput, DeadlineExceeded or QueueFull when refused.
        `wait_estimate(rows)`: seconds until a request of `rows` rows queued now would be answered; a
        request whose deadline comes sooner is refused now instead of run late."""
        policy = self._policy
        rows = request_rows(inputs, policy.max_batch_size) if policy.batching else 1
        if timeout_s is not None and not timeout_s >= 0:
            raise InvalidInput(f"timeout must be >= 0 seconds (0 = not set), got {timeout_s}")
        now = self._clock()
        if deadline is not None and now >= deadline:
            self._observer.on_rejected("deadline")
            raise DeadlineExceeded(DEADLINE_TEXT)
        if policy.max_queue_size and self._depth >= policy.max_queue_size:
            self._observer.on_rejected("queue_full")
            raise QueueFull(f"{self._name} queue is full (max_queue_size {policy.max_queue_size})")
        if deadline is not None and wait_estimate is not None:
            needed = wait_estimate(rows)
            if now + needed > deadline:
                self._observer.on_rejected("unmeetable")
                raise DeadlineExceeded(
                    f"{DEADLINE_TEXT}: {self._name} cannot answer in time (about {needed * 1e3:.0f} ms "
                    f"of queued work, {(deadline - now) * 1e3:.0f} ms left)"
                )
        timeout = policy.queue_timeout(timeout_s)
        self._arrived(now, rows)
        pending = QueuedRequest(
            inputs=inputs,
            rows=rows,
            signature=batch_signature(inputs) if policy.batching else None,
            future=asyncio.get_running_loop().create_future(),
            enqueued_at=now,
            deadline=deadline,
            queue_deadline=now + timeout if timeout is not None else None,
        )
        self._fifo.append(pending)
        self._depth += 1
        self._rows += rows
        if pending.expires_at is not None:
            heapq.heappush(self._expiries, (pending.expires_at, next(self._seq), pending))
        return pending

    def drop(self, pending: QueuedRequest, reason: str | None) -> None:
        """Take a request out of the queue count (dispatched when reason is None); idempotent."""
        if not pending.queued:
            return
        pending.queued = False
        self._depth -= 1
        self._rows -= pending.rows
        if reason is not None:
            self._observer.on_rejected(reason)

    def expire(self, now: float) -> None:
        """Fail every queued request whose deadline has passed (DeadlineExceeded)."""
        while self._expiries and self._expiries[0][0] <= now:
            _, _, pending = heapq.heappop(self._expiries)
            if pending.future.done():
                self.drop(pending, "cancelled")
            elif pending.queued:
                pending.future.set_exception(pending.expiry_error(now))
                self.drop(pending, "deadline")

    def gather(self) -> tuple[list[QueuedRequest], bool]:
        """The live requests from the head that may share a batch, and whether more could still join.
        Dead entries at the head are dropped first; the list is empty when nothing live is queued."""
        while self._fifo and not self._fifo[0].live:
            self.drop(self._fifo.popleft(), "cancelled")
        gathered: list[QueuedRequest] = []
        rows = 0
        for pending in self._fifo:
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

    def take(self, count: int) -> list[QueuedRequest]:
        """Pop the first `count` live requests off the queue, dropping dead entries passed on the way."""
        taken: list[QueuedRequest] = []
        while len(taken) < count:
            pending = self._fifo.popleft()
            if pending.live:
                self.drop(pending, None)
                taken.append(pending)
            else:
                self.drop(pending, "cancelled")
        return taken

    def next_expiry(self) -> float | None:
        """The earliest deadline of a request still queued, or None."""
        while self._expiries and not self._expiries[0][2].queued:
            heapq.heappop(self._expiries)
        return self._expiries[0][0] if self._expiries else None

    def head_enqueued_at(self) -> float | None:
        """When the entry at the head of the FIFO was queued (the delay timer's start), or None."""
        return self._fifo[0].enqueued_at if self._fifo else None

    def fail_all(self, error: Callable[[], BaseException]) -> None:
        """Empty the queue, failing every waiting request with a fresh `error()`."""
        for pending in self._fifo:
            if not pending.future.done():
                pending.future.set_exception(error())
            self.drop(pending, None)
        self._fifo.clear()
