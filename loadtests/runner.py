"""Execute one RunPlan: workers, actions on the timeline, live progress → a RunResult."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Sequence
from typing import Protocol

from loadtests.actions import Action, ActionRecord, run_actions
from loadtests.plan import RunPlan
from loadtests.recorder import IntervalDeltas
from loadtests.results import GeneratorCost, RunResult
from loadtests.slo import Slo
from loadtests.timeline import Timeline
from loadtests.workers import Message, WorkerPool


class Progress(Protocol):
    """What the runner tells a live display; see loadtests.progress."""

    def started(self, timeline: Timeline, zero: float, warmup_s: float, duration_s: float) -> None: ...

    def updated(self) -> None: ...

    def action_done(self, record: ActionRecord) -> None: ...

    def finished(self) -> None: ...


class NoProgress:
    def started(self, timeline: Timeline, zero: float, warmup_s: float, duration_s: float) -> None:
        pass

    def updated(self) -> None:
        pass

    def action_done(self, record: ActionRecord) -> None:
        pass

    def finished(self) -> None:
        pass


async def execute(
    plan: RunPlan, actions: Sequence[Action] = (), progress: Progress | None = None, slo: Slo | None = None
) -> RunResult:
    """Run the plan to the end (Ctrl-C ends measurement early) and merge what the workers saw."""
    progress = progress or NoProgress()
    timing = plan.timing
    timeline = Timeline((t.spec for t in plan.targets), timing.duration_s, timing.interval_s)
    pool = WorkerPool(plan)
    loop = asyncio.get_running_loop()
    records: list[ActionRecord] = []
    action_task: asyncio.Task[list[ActionRecord]] | None = None

    def on_action(record: ActionRecord) -> None:
        records.append(record)
        progress.action_done(record)

    try:
        pool.start()
        await pool.wait_ready()
        zero = pool.release() + timing.warmup_s
        _stop_on_interrupt(loop, pool)
        progress.started(timeline, zero, timing.warmup_s, timing.duration_s)
        action_task = asyncio.create_task(run_actions(actions, plan.url, zero, on_action))

        def on_message(message: Message) -> None:
            if isinstance(message, IntervalDeltas):
                timeline.add(message)
                progress.updated()

        finished = await pool.collect(on_message)
        if not pool.stopped:
            await action_task
    finally:
        if action_task is not None and not action_task.done():
            action_task.cancel()
        _restore_interrupt(loop)
        progress.finished()
        pool.close()
    timeline.finish(finished)
    cost = GeneratorCost(
        plan.workers, plan.connections, sum(f.cpu_s for f in finished), max(f.wall_s for f in finished)
    )
    return RunResult(plan.url, timing, timeline.targets, cost, records, slo)


def _stop_on_interrupt(loop: asyncio.AbstractEventLoop, pool: WorkerPool) -> None:
    try:
        loop.add_signal_handler(signal.SIGINT, pool.stop)
    except (NotImplementedError, RuntimeError):  # not the main thread: no signal handling
        pass


def _restore_interrupt(loop: asyncio.AbstractEventLoop) -> None:
    try:
        loop.remove_signal_handler(signal.SIGINT)
    except (NotImplementedError, RuntimeError):
        pass
