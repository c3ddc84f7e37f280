"""Worker processes: each runs its own event loop and gRPC channel(s) and drives its share of the load.

Start barrier: every worker connects, reports ready, then waits for the parent's start time (a
CLOCK_MONOTONIC instant, the same clock in every process). Workers stream interval deltas to the
parent about twice a second and a WorkerFinished with their totals at the end. Processes are
spawned, not forked: gRPC's core does not survive a fork of a process that already used it.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import queue
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event
from typing import Any

from loadtests.engine import WorkerEngine
from loadtests.plan import RunPlan
from loadtests.recorder import IntervalDeltas, Recorder, WorkerFailed, WorkerFinished, WorkerReady
from loadtests.wire import aio_channel, infer_method

READY_TIMEOUT_S = 60.0
CONNECT_TIMEOUT_S = 10.0
Message = WorkerReady | WorkerFailed | IntervalDeltas | WorkerFinished


class WorkerError(RuntimeError):
    """A worker could not connect or died; the message carries its reason."""


@dataclass(frozen=True)
class WorkerControl:
    """Shared between the parent and every worker."""

    out: Any  # multiprocessing Queue of Message
    go: Event
    stop: Event
    start_at: Any  # multiprocessing Value('d')


def worker_main(plan: RunPlan, worker: int, control: WorkerControl) -> None:
    """Entry point of a worker process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(_worker(plan, worker, control))
    except Exception as err:  # noqa: BLE001 - reported to the parent, which fails the run
        control.out.put(WorkerFailed(worker, f"{type(err).__name__}: {err}"))


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed (about 10% less generator CPU per request), else asyncio's default."""
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


async def _worker(plan: RunPlan, worker: int, control: WorkerControl) -> None:
    channels = [
        aio_channel(plan.url, separate_connection=plan.connections > 1, tls=plan.tls)
        for _ in range(plan.connections)
    ]
    try:
        for channel in channels:
            try:
                await asyncio.wait_for(channel.channel_ready(), CONNECT_TIMEOUT_S)
            except TimeoutError:
                control.out.put(
                    WorkerFailed(worker, f"could not connect to {plan.url} in {CONNECT_TIMEOUT_S:g}s")
                )
                return
        control.out.put(WorkerReady(worker))
        if not await asyncio.to_thread(control.go.wait, READY_TIMEOUT_S) or control.stop.is_set():
            return
        start = float(control.start_at.value)
        recorder = Recorder(
            len(plan.targets),
            start + plan.timing.warmup_s,
            plan.timing.interval_s,
            tuple(t.spec.keys is not None for t in plan.targets),
        )
        engine = WorkerEngine(plan, worker, [infer_method(c) for c in channels], recorder)

        def publish(deltas: dict[tuple[int, int], Any]) -> None:
            if deltas:
                control.out.put(IntervalDeltas(worker, deltas))

        await engine.run(start, publish, control.stop.is_set)
        control.out.put(WorkerFinished(worker, recorder.totals, engine.cpu_s, engine.wall_s))
    finally:
        for channel in channels:
            await channel.close()


class WorkerPool:
    """The parent's side: start workers, release them together, hand their messages on."""

    def __init__(self, plan: RunPlan) -> None:
        context = mp.get_context("spawn")
        self._plan = plan
        self._pending: list[Message] = []
        self._control = WorkerControl(
            context.Queue(), context.Event(), context.Event(), context.Value("d", 0.0)
        )
        self._processes: list[BaseProcess] = [
            context.Process(
                target=worker_main, args=(plan, w, self._control), daemon=True, name=f"loadtests-worker-{w}"
            )
            for w in range(plan.workers)
        ]

    def start(self) -> None:
        for process in self._processes:
            process.start()

    async def wait_ready(self) -> None:
        ready: set[int] = set()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while len(ready) < len(self._processes):
            for message in self._drain():
                self._raise_failure(message)
                if isinstance(message, WorkerReady):
                    ready.add(message.worker)
            if len(ready) < len(self._processes):
                self._raise_if_dead(ready)
                if time.monotonic() > deadline:
                    raise WorkerError(f"workers not ready after {READY_TIMEOUT_S:g}s")
                await asyncio.sleep(0.02)

    def release(self, lead_s: float = 0.1) -> float:
        """Start every worker at the same instant, ``lead_s`` from now; return that instant."""
        start = time.monotonic() + lead_s
        self._control.start_at.value = start
        self._control.go.set()
        return start

    @property
    def stopped(self) -> bool:
        return self._control.stop.is_set()

    def stop(self) -> None:
        self._control.stop.set()
        self._control.go.set()

    async def collect(
        self, on_message: Callable[[Message], None], poll_s: float = 0.05
    ) -> list[WorkerFinished]:
        """Pass messages on until every worker has finished; raise WorkerError if one fails."""
        finished: dict[int, WorkerFinished] = {}
        while len(finished) < len(self._processes):
            for message in self._drain():
                self._raise_failure(message)
                if isinstance(message, WorkerFinished):
                    finished[message.worker] = message
                on_message(message)
            if len(finished) < len(self._processes):
                self._raise_if_dead(set(finished))
                await asyncio.sleep(poll_s)
        return [finished[w] for w in sorted(finished)]

    def _drain(self) -> list[Message]:
        messages, self._pending = self._pending, []
        while True:
            try:
                messages.append(self._control.out.get_nowait())
            except queue.Empty:
                return messages

    @staticmethod
    def _raise_failure(message: Message) -> None:
        if isinstance(message, WorkerFailed):
            raise WorkerError(f"worker {message.worker}: {message.error}")

    def _raise_if_dead(self, done: set[int]) -> None:
        """A worker that exited without reaching ``done`` fails the run (its last words first)."""
        dead = [w for w, p in enumerate(self._processes) if w not in done and not p.is_alive()]
        if not dead:
            return
        time.sleep(0.2)  # let its queue feeder thread deliver what it sent before exiting
        late = self._drain()
        for message in late:
            self._raise_failure(message)
        self._pending.extend(late)
        finished = {m.worker for m in late if isinstance(m, WorkerFinished)}
        still = [w for w in dead if w not in finished]
        if still:
            raise WorkerError(f"worker {still[0]} exited with code {self._processes[still[0]].exitcode}")

    def close(self) -> None:
        self.stop()
        for process in self._processes:
            if process.pid is None:  # never started
                continue
            process.join(timeout=5.0)
            if process.is_alive():
                process.terminate()
                process.join(timeout=2.0)
