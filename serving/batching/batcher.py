"""The dynamic batcher: one per loaded model version, with Triton's dynamic-batching semantics.

    infer() ─► admit (validate, deadline, QueueFull) ─► RequestQueue ─► scheduler pass (loop callback)
       ▲                                                              │ drops expired / cancelled requests,
       │                                                              │ gathers a batch (choose_batch),
       │                                                              ▼ takes a free instance
    one future per request ◄─ split_outputs ◄─ backend.infer ◄─ merge_inputs  (worker thread, or inline)

The pieces: `policy` decides when a gathered batch goes (choose_batch), `queue` admits requests and
tracks their deadlines, `run` runs one batch (merge and split in `tensors`, out of memory in `retry`);
this module schedules batches onto instances and answers their requests.

Scheduling costs one loop callback per burst, not one task wake-up per request: `infer` asks for a pass
(`loop.call_soon`) unless one is already pending, so the requests that arrive in one loop iteration meet
in one pass; a timer (`loop.call_later`) covers the earliest request expiry and, while a batch waits for
a fuller one, its delay. Work-conserving by default: a free instance takes what is queued at once (see
serving/batching/policy.py; `strict_delay` keeps Triton's fixed delay), unless waiting is worth it: a
preferred size is within reach, or the delay is at most DELAY_SHARE of the model's measured batch time
(for a slow model the delay is cheap, and the clients it just answered come back within it). While
draining, nothing waits.

One batch ahead: while an instance runs, a batch that waiting cannot change (full, or the next request
cannot join it) goes to the instance's own thread at once and starts as the running one ends, not after
the loop has answered that one and the thread has won the GIL back (docs/performance.md, round 6). A
request handed over ahead no longer expires: it is running, as far as the queue is concerned.

Where a batch runs: on the instance's own worker thread, or inline on the event loop when the model's
recent batch wall time (measured on every batch, wherever it ran) is below `inline_below_s`: for a model
that costs microseconds, the hand-off to a thread and back costs more than the model
(docs/performance.md has the measurement). 0 disables inline runs.

max_batch_size == 0: the model does not batch; each request runs alone, inputs as given, counted as 1 row.
The batcher never closes its backends: the owner (the registry) does.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from serving.backends.base import Backend
from serving.batching.policy import BatchingPolicy, choose_batch, preferred_within_reach
from serving.batching.queue import BatchObserver, NullObserver, QueuedRequest, RequestQueue, RequestResult
from serving.batching.retry import FailureStreak
from serving.batching.run import Outcome, execution_error, run_batch
from serving.errors import Unavailable
from serving.types import TensorMap

# Work-conserving batching still waits out the delay when it costs at most this share of a batch's time.
DELAY_SHARE = 0.1

__all__ = ["BatchObserver", "BatchingPolicy", "DynamicBatcher", "RequestResult"]

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Instance:
    """A backend instance and its thread; `batches`: 0 free, 1 running, 2 running and one ahead."""

    backend: Backend
    executor: ThreadPoolExecutor
    batches: int = 0


class DynamicBatcher:
    """Queue + scheduler passes + one future per request, over `len(instances)` parallel model instances."""

    def __init__(
        self,
        instances: Sequence[Backend],
        policy: BatchingPolicy,
        *,
        observer: BatchObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
        name: str = "model",
        inline_below_s: float = 0.0,
    ) -> None:
        if not instances:
            raise ValueError("a DynamicBatcher needs at least one backend instance")
        self._policy = policy
        self._observer: BatchObserver = observer or NullObserver()
        self._clock = clock
        self._name = name
        self._run = functools.partial(run_batch, batching=policy.batching, clock=clock, name=name)
        self._inline_below_s = inline_below_s
        self._instances = [
            _Instance(backend, ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"batch-{name}-{i}"))
            for i, backend in enumerate(instances)
        ]
        self._batch_s: float | None = None  # recent wall time of one batch (moving average)
        self._inline = False  # batches run on the loop: _batch_s < inline_below_s (2× that to stay)
        self._queue = RequestQueue(policy, self._observer, clock, name)
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pass_pending = False
        self._timer: asyncio.TimerHandle | None = None
        self._failure: BaseException | None = None
        self._draining = False
        self._closed = False
        self.failures = FailureStreak(name)  # consecutive failed batches: unhealthy from UNHEALTHY_AFTER

    @property
    def healthy(self) -> bool:
        return self.failures.healthy

    @property
    def queue_depth(self) -> int:
        return self._queue.depth

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def runs_inline(self) -> bool:
        """Whether the next batch runs on the event loop (the model's measured batch time is tiny)."""
        return self._inline

    async def start(self) -> None:
        if self._closed:
            raise Unavailable(f"{self._name} is closed")
        self._loop = asyncio.get_running_loop()

    async def infer(
        self, inputs: TensorMap, *, deadline: float | None = None, timeout_s: float | None = None
    ) -> RequestResult:
        self._check_accepting()
        pending = self._queue.admit(inputs, deadline, timeout_s, self._wait_estimate)
        self._idle.clear()
        self._request_pass()
        try:
            return await pending.future
        except asyncio.CancelledError:
            self._queue.drop(pending, "cancelled")
            self._request_pass()
            self._update_idle()
            raise

    async def drain(self) -> None:
        """Stop accepting; return once every queued and running request has finished."""
        self._draining = True
        self._request_pass()
        await self._idle.wait()

    async def close(self) -> None:
        if self._closed:
            return
        await self.drain()
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        for instance in self._instances:
            await asyncio.to_thread(instance.executor.shutdown, True)

    def _wait_estimate(self, rows: int) -> float:
        """Seconds until a request of `rows` rows queued now is answered: the batches ahead of it (those
        handed to a thread ahead too) and its own, spread over the instances, each the recent batch time;
        half a batch more when every instance is busy. 0 until a batch has run (nothing measured yet)."""
        if self._batch_s is None:
            return 0.0
        batches = sum(instance.batches > 1 for instance in self._instances)
        if self._policy.batching:
            batches += math.ceil((self._queue.rows + rows) / self._policy.max_batch_size)
        else:
            batches += self._queue.depth + 1
        waves = math.ceil(batches / len(self._instances)) + (0.0 if self._any_free() else 0.5)
        return waves * self._batch_s

    def _any_free(self) -> bool:
        return any(not instance.batches for instance in self._instances)

    def _ready_instance(self) -> _Instance | None:
        """A free instance; else, for batches on threads, a running one with nothing ahead of it yet."""
        ahead: _Instance | None = None
        for instance in self._instances:
            if instance.batches == 0:
                return instance
            if instance.batches == 1 and ahead is None:
                ahead = instance
        return None if self._inline else ahead

    def _check_accepting(self) -> None:
        if self._failure is not None:
            raise Unavailable(f"{self._name} batcher failed: {self._failure}")
        if self._draining or self._closed:
            raise Unavailable(f"{self._name} is draining")
        if self._loop is None:
            raise Unavailable(f"{self._name} batcher is not started")

    def _update_idle(self) -> None:
        if self._queue.depth == 0 and self._in_flight == 0:
            self._idle.set()
        else:
            self._idle.clear()

    # ---- scheduler passes --------------------------------------------------------------------------

    def _request_pass(self) -> None:
        """Run one scheduler pass soon, unless one is already due (one callback per burst)."""
        if not self._pass_pending and self._loop is not None and self._failure is None:
            self._pass_pending = True
            self._loop.call_soon(self._pass)

    def _on_timer(self) -> None:
        self._timer = None
        self._pass()

    def _pass(self) -> None:
        self._pass_pending = False
        self._run_pass()

    def _run_pass(self) -> None:
        try:
            wait_s = self._step(self._clock())
        except Exception as exc:  # a bug, or an observer that raised: fail closed, nothing may hang
            self._fail_closed(exc)
            return
        self._arm_timer(wait_s)

    def _arm_timer(self, wait_s: float | None) -> None:
        """Keep one timer, due no later than `wait_s` from now (a timer due earlier only runs a pass)."""
        if wait_s is None or self._loop is None:
            return
        when = self._loop.time() + wait_s
        if self._timer is not None:
            if self._timer.when() <= when:
                return
            self._timer.cancel()
        self._timer = self._loop.call_at(when, self._on_timer)

    def _step(self, now: float) -> float | None:
        """Drop what expired, dispatch what is ready; return seconds until the next timer (None: none)."""
        self._queue.expire(now)
        while (instance := self._ready_instance()) is not None:
            batch = self._next_batch(now, ahead=instance.batches > 0)
            if not batch:
                break
            self._dispatch(instance, batch)
        self._update_idle()
        return self._next_timer(now)

    def _next_batch(self, now: float, ahead: bool) -> list[QueuedRequest]:
        gathered, can_grow = self._queue.gather()  # max_batch_size 0: always one request, dispatched at once
        if not gathered or (ahead and can_grow):  # ahead of a running batch: only what cannot change
            return []
        policy = self._policy
        # the same sum as in _next_timer, so "expired" and "wait 0 s" always agree (no float spin)
        ends = gathered[0].enqueued_at + policy.max_queue_delay_s
        go = self._draining or now >= ends
        if not (go or policy.strict_delay):  # work-conserving: an instance is free
            go = not self._worth_waiting(gathered, ends - now)
        count = choose_batch([p.rows for p in gathered], policy, can_grow=can_grow, timer_expired=go)
        return self._queue.take(count)

    def _worth_waiting(self, gathered: list[QueuedRequest], left_s: float) -> bool:
        """Whether a free instance should let the gathered batch wait (at most `left_s`, what is left of
        its delay): when the delay is cheap next to a batch (at most DELAY_SHARE of the measured batch
        time: a slow model's closed-loop clients come back within it), or when the arrivals expected
        within it would reach a preferred size."""
        if self._batch_s is not None and self._policy.max_queue_delay_s <= DELAY_SHARE * self._batch_s:
            return True
        rows = sum(p.rows for p in gathered)
        expected = self._queue.expected_rows(left_s)
        return preferred_within_reach(rows, self._policy.preferred_batch_sizes, expected)

    def _next_timer(self, now: float) -> float | None:
        expiry = self._queue.next_expiry()
        head = self._queue.head_enqueued_at()
        if head is not None and self._policy.batching and self._any_free():
            delay_ends = head + self._policy.max_queue_delay_s
            expiry = delay_ends if expiry is None else min(expiry, delay_ends)
        return None if expiry is None else max(0.0, expiry - now)

    def _fail_closed(self, failure: BaseException) -> None:
        self._failure = failure
        log.error("batcher for %s failed", self._name, exc_info=failure)
        self._queue.fail_all(lambda: Unavailable(f"{self._name} batcher failed: {failure}"))
        self._update_idle()

    # ---- running one batch -----------------------------------------------------------------------

    def _dispatch(self, instance: _Instance, batch: list[QueuedRequest]) -> None:
        instance.batches += 1
        self._in_flight += len(batch)
        inputs, rows = [p.inputs for p in batch], [p.rows for p in batch]
        if self.runs_inline:
            try:
                outcome = self._run(instance.backend, inputs, rows)
            except Exception as exc:
                self._finish(instance, batch, None, exc)
            else:
                self._finish(instance, batch, outcome, None)
            return
        assert self._loop is not None
        future = self._loop.run_in_executor(instance.executor, self._run, instance.backend, inputs, rows)
        future.add_done_callback(functools.partial(self._finished, instance, batch))

    def _finished(
        self, instance: _Instance, batch: list[QueuedRequest], future: asyncio.Future[Outcome]
    ) -> None:
        """The worker thread's batch is done (a loop callback): answer its requests, then schedule at
        once, not in a pass queued behind the answered requests' tasks (which encode their replies)."""
        error = future.exception()
        if error is None:
            self._finish(instance, batch, future.result(), None)
        else:
            failure = error if isinstance(error, Exception) else RuntimeError(repr(error))
            self._finish(instance, batch, None, failure)
        self._run_pass()

    def _finish(
        self,
        instance: _Instance,
        batch: list[QueuedRequest],
        outcome: Outcome | None,
        error: Exception | None,
    ) -> None:
        rows = sum(p.rows for p in batch)
        try:
            if outcome is None:
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(execution_error(error or RuntimeError("no result")))
                self._observer.on_batch(rows, len(batch), None, error)
                self.failures.record(failed=True)
                return
            parts, timings, began, took = outcome
            self._measured(took)
            answered = False
            for pending, outputs in zip(batch, parts, strict=True):
                if isinstance(outputs, Exception):  # its half of an out-of-memory batch failed again
                    if not pending.future.done():
                        pending.future.set_exception(execution_error(outputs))
                    continue
                answered = True
                if not pending.future.done():
                    queue_ns = int((began - pending.enqueued_at) * 1e9)
                    pending.future.set_result(RequestResult(outputs, queue_ns, timings, rows))
            self._observer.on_batch(rows, len(batch), timings, None)
            self.failures.record(failed=not answered)
        finally:
            self._in_flight -= len(batch)
            instance.batches -= 1
            self._update_idle()

    def _measured(self, took: float) -> None:
        """A batch took `took` s: update the moving average, and where the next batch runs. Hysteresis
        (inline below the threshold, back to the thread only above twice it) keeps a model near the
        threshold from switching on every preempted batch of a busy machine."""
        self._batch_s = took if self._batch_s is None else 0.8 * self._batch_s + 0.2 * took
        self._inline = self._batch_s < self._inline_below_s * (2.0 if self._inline else 1.0)
