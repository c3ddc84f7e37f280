"""One worker's hot path: closed-loop users and open-loop arrival schedules on one asyncio loop.

Closed loop: ``concurrency`` users, each sending its next request as soon as the previous reply
arrives; latency is send → reply.

Open loop: requests are *intended* at fixed times (constant rate: evenly spaced, workers
interleaved; Poisson: exponential gaps). Latency is measured from the intended time, not from
when the request actually left, so a server (or generator) that stalls cannot hide the delay it
caused for the requests that should have been sent meanwhile (no coordinated omission). The gap
between intended and actual send is recorded separately as generator lag. In-flight requests are
capped (``max_inflight``); past the cap the schedule waits, and the wait still counts as latency.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import numpy as np

from loadtests.keys import KeySampler
from loadtests.plan import PreparedTarget, RunPlan, worker_share
from loadtests.recorder import IntervalStats, Recorder
from loadtests.wire import ROUTING_KEY_HEADER, Metadata, encode_routing_key, model_version_of

InferMethod = Callable[..., Any]  # grpc.aio.UnaryUnaryMultiCallable taking and returning bytes
Publish = Callable[[dict[tuple[int, int], IntervalStats]], None]


class RequestSource:
    """Cycles through a target's pre-serialised bodies, adding a routing key when it has keys."""

    def __init__(self, target: PreparedTarget, seed: int) -> None:
        self._bodies = itertools.cycle(target.bodies)
        keys = target.spec.keys
        self._keys = keys
        self._sampler = KeySampler(keys, seed) if keys else None
        self._suffixes: dict[int, tuple[bytes, Metadata]] = {}

    def next(self) -> tuple[bytes, Metadata | None, int | None]:
        body = next(self._bodies)
        if self._sampler is None or self._keys is None:
            return body, None, None
        index = self._sampler.next()
        cached = self._suffixes.get(index)
        if cached is None:
            key = self._keys.key(index)
            cached = self._suffixes[index] = (encode_routing_key(key), ((ROUTING_KEY_HEADER, key),))
        return body + cached[0], cached[1], index


def arrival_times(
    start: float, rate: float, poisson: bool, phase: float, rng: np.random.Generator
) -> Iterator[float]:
    """Absolute intended send times for one worker's share of an open-loop target."""
    if not poisson:
        for i in itertools.count():
            yield start + phase + i / rate
    t = start
    while True:
        for gap in rng.exponential(1.0 / rate, size=1024).tolist():
            t += gap
            yield t


class WorkerEngine:
    def __init__(self, plan: RunPlan, worker: int, methods: list[InferMethod], recorder: Recorder) -> None:
        self._plan = plan
        self._worker = worker
        self._methods = itertools.cycle(methods)
        self._recorder = recorder
        self._slots = asyncio.Semaphore(plan.max_inflight)
        self.end = recorder.zero + plan.timing.duration_s
        self.cpu_s = 0.0  # this process's CPU time from the start of measurement to the last reply
        self.wall_s = 0.0

    def stop_now(self) -> None:
        self.end = min(self.end, time.monotonic())

    async def run(self, start: float, publish: Publish, stopped: Callable[[], bool]) -> None:
        """Drive every target from ``start`` until the end of measurement, then wait for replies."""
        delay = start - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        loops = [self._target_loops(target, start) for target in self._plan.targets]
        flusher = asyncio.create_task(self._flush_periodically(publish, stopped))
        marks: list[tuple[float, float]] = []
        meter = asyncio.create_task(self._mark_zero(marks))
        try:
            await asyncio.gather(*itertools.chain.from_iterable(loops))
        finally:
            flusher.cancel()
            meter.cancel()
        if marks:
            self.cpu_s, self.wall_s = time.process_time() - marks[0][0], time.monotonic() - marks[0][1]
        publish(self._recorder.take_deltas())

    async def _mark_zero(self, marks: list[tuple[float, float]]) -> None:
        """Generator cost counts from the end of warm-up, like the requests it is divided by."""
        delay = self._recorder.zero - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        marks.append((time.process_time(), time.monotonic()))

    def _target_loops(self, target: PreparedTarget, start: float) -> list[asyncio.Task[None]]:
        concurrency, rate = worker_share(target.spec.load, self._worker, self._plan.workers)
        seed = self._plan.seed * 1_000_003 + self._worker * 1009 + target.index
        source = RequestSource(target, seed)
        if concurrency:
            return [asyncio.create_task(self._user(target, source)) for _ in range(concurrency)]
        if rate <= 0:
            return []
        spec = target.spec.load
        phase = self._worker / spec.rate  # constant-rate workers interleave
        times = arrival_times(start, rate, spec.poisson, phase, np.random.default_rng(seed))
        return [asyncio.create_task(self._arrivals(target, source, times))]

    async def _flush_periodically(self, publish: Publish, stopped: Callable[[], bool]) -> None:
        period = min(0.5, self._plan.timing.interval_s)
        while True:
            await asyncio.sleep(period)
            if stopped():
                self.stop_now()
            publish(self._recorder.take_deltas())

    async def _user(self, target: PreparedTarget, source: RequestSource) -> None:
        while True:
            now = time.monotonic()
            if now >= self.end:
                return
            await self._send(target, source, now)

    async def _arrivals(self, target: PreparedTarget, source: RequestSource, times: Iterator[float]) -> None:
        pending: set[asyncio.Task[None]] = set()
        for intended in times:
            if intended >= self.end:
                break
            delay = intended - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await self._slots.acquire()
            self._recorder.lag(target.index, intended, time.monotonic())
            task = asyncio.create_task(self._send(target, source, intended))
            pending.add(task)
            task.add_done_callback(self._release(pending))
        if pending:
            await asyncio.gather(*pending)

    def _release(self, pending: set[asyncio.Task[None]]) -> Callable[[asyncio.Task[None]], None]:
        def done(task: asyncio.Task[None]) -> None:
            pending.discard(task)
            self._slots.release()

        return done

    async def _send(self, target: PreparedTarget, source: RequestSource, intended: float) -> None:
        body, metadata, key = source.next()
        recorder = self._recorder
        try:
            reply = await next(self._methods)(body, metadata=metadata, timeout=target.spec.timeout_s)
        except grpc.aio.AioRpcError as err:
            recorder.error(target.index, intended, err.code().name)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # noqa: BLE001 - a client-side failure is a result, not a crash
            recorder.error(target.index, intended, f"CLIENT_{type(err).__name__}")
        else:
            recorder.ok(target.index, intended, time.monotonic(), model_version_of(reply), key)
