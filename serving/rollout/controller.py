"""The rollout controller: runs every model's rollout inside the server, one tick at a time.

Each tick (`tick_s`, at most a second) and for each model with an active rollout it measures the interval
since the current step began (serving/rollout/evidence.py; each tick's latency is one block of the
paired block bootstrap), judges it (serving/rollout/judge.py) and publishes the gates (metrics, `status`).
A step first settles (`settle_s`, unmeasured); once it has been measured for `step_time` (the shadow
phase: `--shadow`) the judge's decision applies: advance (or promote), roll back, or hold; a held step is
judged again one `step_time` later over its grown interval, until it is decided.

Every transition is one atomic write of the traffic policy with the rollout's state inside it and a
history entry with its reason and evidence (PolicyStore.save), then put in force (TrafficControl.refresh):
a restart finds the rollout in traffic.json and resumes it at the same step with a new interval, never
further. A manual change of the policy (split, promote, rollback, …) that drops or replaces the rollout
state is followed: the controller adopts what the policy in force says.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from serving.errors import FailedPrecondition, NotFound
from serving.lifecycle.registry import ModelRegistry
from serving.rollout import transitions
from serving.rollout.evidence import EvidenceSource, Snapshot, window
from serving.rollout.judge import HOLD, ROLLBACK, Decision, Evidence, GateResult, judge
from serving.rollout.metrics import RolloutMetrics
from serving.rollout.plan import IDLE, PAUSED, PROMOTED, SHADOW, RolloutError, RolloutPlan, RolloutState
from serving.rollout.status import RolloutView
from serving.traffic.policy import TrafficPolicy
from serving.traffic.router import TrafficControl
from serving.traffic.store import PolicyStore

log = logging.getLogger("serving.rollout")

CONTROLLER_SOURCE = "rollout controller"
MAX_TICK_S = 1.0
MAX_SETTLE_S = 2.0


def settle_s(state: RolloutState) -> float:
    """Time after a transition that no step measures: the first requests a version gets at a new
    share (new batch shapes, threads woken, caches) are not what it does at that share."""
    return min(state.plan.step_time_s, MAX_SETTLE_S)


@dataclass
class _Running:
    """What the controller keeps of one model's rollout besides its persisted state."""

    state: RolloutState
    step_started: float  # monotonic
    looks: int = 1  # the step's verdict applies at settle + looks × step_time (one more per hold)
    start: Snapshot | None = None
    previous: Snapshot | None = None  # the last tick's: the next block of latency starts there
    blocks: list[tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    results: tuple[GateResult, ...] = ()
    holding: str = ""  # why the step holds (after its time), "" otherwise
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class RolloutController:
    def __init__(
        self,
        registry: ModelRegistry,
        store: PolicyStore,
        traffic: TrafficControl,
        evidence: EvidenceSource,
        metrics: RolloutMetrics | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        seed: int | None = None,
    ) -> None:
        self._registry = registry
        self._store = store
        self._traffic = traffic
        self._evidence = evidence
        self._metrics = metrics
        self._clock = clock
        self._rng = np.random.default_rng(seed)
        self._running: dict[str, _Running] = {}
        self._task: asyncio.Task[None] | None = None

    # ---- operator calls ------------------------------------------------------------------------

    async def start(self, model: str, plan: RolloutPlan, source: str) -> RolloutView:
        self._check_model(model)
        current = self._traffic.policy(model)
        if current is not None and current.rollout is not None and current.rollout.active:
            raise FailedPrecondition(
                f"model '{model}' already has a rollout to v{current.rollout.candidate} "
                f"({current.rollout.phase}); abort it first (serving ctl rollout {model} --abort)"
            )
        baseline = self._baseline(model, current, plan.candidate)
        if not self._registry.is_ready(model, str(plan.candidate)):
            raise FailedPrecondition(
                f"version {plan.candidate} of '{model}' is not READY; load it before rolling out to it"
            )
        move = transitions.start(plan, baseline, source)
        await self._apply(model, move, None, source=source)
        return self.status(model)

    async def pause(self, model: str, source: str) -> RolloutView:
        return await self._operate(model, transitions.pause, source)

    async def resume(self, model: str, source: str) -> RolloutView:
        return await self._operate(model, transitions.resume, source)

    async def _operate(
        self, model: str, transition: Callable[[RolloutState, str], transitions.Transition], source: str
    ) -> RolloutView:
        """An operator's transition of a running rollout, under its lock."""
        running = self._active(model)
        async with running.lock:
            running = self._running.get(model, running)  # a tick may have moved it while we waited
            await self._apply(model, transition(running.state, source), running, source=source)
        return self.status(model)

    async def abort(self, model: str, source: str) -> RolloutView:
        self._check_model(model)
        policy = self._traffic.policy(model)
        state = policy.rollout if policy is not None else None
        if state is None or not (state.active or self._in_rollback_window(state)):
            raise FailedPrecondition(
                f"model '{model}' has no rollout to abort (running, or promoted within its rollback window)"
            )
        running = self._running.get(model) or _Running(state, self._clock())
        async with running.lock:
            running = self._running.get(model, running)  # a tick may have moved it while we waited
            reason = f"aborted by {source}" + (
                " within the rollback window" if state.phase == PROMOTED else ""
            )
            move = transitions.rollback(running.state, reason, "", abort=True)
            await self._apply(model, move, running, source=source)
        return self.status(model)

    def status(self, model: str) -> RolloutView:
        self._check_model(model)
        policy = self._traffic.policy(model)
        state = policy.rollout if policy is not None else None
        if state is None:
            return RolloutView(model=model, phase=IDLE)
        running = self._running.get(model)
        now = self._clock()
        elapsed = now - running.step_started if running is not None and state.active else 0.0
        looks = running.looks if running is not None else 1
        due = (
            settle_s(state) + looks * self._step_time(state) - elapsed
            if state.active and state.phase != PAUSED
            else math.nan
        )
        window_left = (
            max(state.plan.rollback_window_s - transitions.seconds_since(state.updated), 0.0)
            if state.phase == PROMOTED
            else 0.0
        )
        return RolloutView.of(
            model,
            state,
            running.results if running is not None else (),
            reason=(running.holding if running is not None and running.holding else state.reason),
            step_elapsed_s=elapsed,
            next_decision_s=max(due, 0.0),
            rollback_window_left_s=window_left,
        )

    # ---- the loop ------------------------------------------------------------------------------

    def start_loop(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="rollout-controller")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._tick_s())
            for model in self._registry.model_names():
                try:
                    await self.tick(model)
                except Exception:  # one model's failure must not stop the others' rollouts
                    log.exception("rollout of '%s': tick failed", model)

    def _tick_s(self) -> float:
        times = [self._step_time(r.state) for r in self._running.values() if r.state.active]
        return min([MAX_TICK_S, *(t / 5 for t in times)])

    async def tick(self, model: str) -> None:
        """Follow the policy in force, measure, judge, and apply a due decision for `model`."""
        running = self._follow(model)
        if running is None:
            return
        async with running.lock:
            if self._running.get(model) is not running:
                return  # an operator's change replaced it while this tick waited; the next tick follows
            state = running.state
            if state.phase == PAUSED:
                return
            now = self._clock()
            if now - running.step_started < settle_s(state):
                return  # the step's interval starts once the new weights have settled
            snapshot = await asyncio.to_thread(
                self._evidence.snapshot, model, state.baseline, state.candidate, now
            )
            evidence = self._measure(running, snapshot)
            if evidence is None:  # the first tick of the step, or a version reloaded: a new interval
                running.start, running.previous, running.blocks, running.results = snapshot, snapshot, [], ()
                return
            if not self._registry.is_ready(model, str(state.candidate)):
                reason = (
                    f"candidate v{state.candidate} is not READY ({self._state_of(model, state.candidate)})"
                )
                await self._apply(model, transitions.rollback(state, reason, "candidate"), running)
                return
            plan = state.plan  # bootstraps take milliseconds: off the event loop
            verdict = await asyncio.to_thread(
                judge, plan.gates, evidence, plan.min_requests, self._rng, shadow_ran=plan.shadow_s > 0
            )
            running.results = verdict.results
            if self._metrics is not None:
                self._metrics.gates(model, verdict.results)
            if now - running.step_started >= settle_s(state) + running.looks * self._step_time(state):
                await self._decide(model, running, verdict, evidence.seconds)

    def _measure(self, running: _Running, snapshot: Snapshot) -> Evidence | None:
        """The step's interval up to `snapshot`, with the latency of each tick as a block (None: restart)."""
        if running.start is None or running.previous is None:
            return None
        phase = running.state.judged_phase
        evidence, block = window(running.start, snapshot, phase), window(running.previous, snapshot, phase)
        if evidence is None or block is None:
            return None
        running.previous = snapshot
        running.blocks.append((block.candidate.latency, block.baseline.latency))
        return replace(evidence, latency_blocks=tuple(running.blocks))

    async def _decide(self, model: str, running: _Running, verdict: Decision, seconds: float) -> None:
        state = running.state
        if verdict.decision == HOLD:
            if not running.holding and self._metrics is not None:
                self._metrics.decided(model, "hold")
            running.holding = f"holding at {state.candidate_percent():g}%: {verdict.reason}"
            running.looks += 1  # judged again after one more step time over the grown interval
            return
        evidence = {
            **verdict.evidence(),
            "interval_s": round(seconds, 3),
            "percent": state.candidate_percent(),
            "candidate": {"version": state.candidate, "state": self._state_of(model, state.candidate)},
            "baseline": {"version": state.baseline, "state": self._state_of(model, state.baseline)},
        }
        if verdict.decision == ROLLBACK:
            move = transitions.rollback(state, verdict.reason, verdict.failed_gate)
        else:
            move = transitions.advance(state, verdict.reason)
        await self._apply(model, move, running, evidence)

    # ---- applying a transition -----------------------------------------------------------------

    async def _apply(
        self,
        model: str,
        move: transitions.Transition,
        running: _Running | None,
        evidence: dict[str, object] | None = None,
        source: str = CONTROLLER_SOURCE,
    ) -> None:
        def write() -> None:
            self._store.save(model, move.policy, move.action, source, reason=move.reason, evidence=evidence)

        await asyncio.to_thread(write)
        self._traffic.refresh(model, force=True)
        log.info("rollout of '%s': %s: %s", model, move.action, move.reason)
        results = running.results if running is not None else ()
        fresh = _Running(move.state, self._clock(), results=results)
        if running is not None:
            fresh.lock = running.lock
        self._running[model] = fresh
        if self._metrics is not None:
            if move.decision:
                self._metrics.decided(model, move.decision)
            self._publish(model, move.state)

    def _publish(self, model: str, state: RolloutState) -> None:
        if self._metrics is not None:
            self._metrics.phase(model, state.phase, state.candidate_percent(), state.step)

    def _follow(self, model: str) -> _Running | None:
        """The model's running rollout, adopting the policy in force (a restart, a manual change)."""
        policy = self._traffic.policy(model)
        state = policy.rollout if policy is not None else None
        running = self._running.get(model)
        if state is None:
            if running is not None:
                del self._running[model]
                if self._metrics is not None:
                    self._metrics.phase(model, IDLE, 0.0, -1)
            return None
        if running is None or running.state != state:
            running = _Running(state, self._clock())
            self._running[model] = running
            self._publish(model, state)
            if state.active:
                log.info(
                    "rollout of '%s': following %s at %g%%", model, state.phase, state.candidate_percent()
                )
        return running if state.active else None

    # ---- checks --------------------------------------------------------------------------------

    def _step_time(self, state: RolloutState) -> float:
        plan = state.plan
        return max(plan.shadow_s, plan.step_time_s) if state.judged_phase == SHADOW else plan.step_time_s

    def _active(self, model: str) -> _Running:
        self._check_model(model)
        running = self._follow(model)
        if running is None:
            raise FailedPrecondition(f"model '{model}' has no running rollout")
        return running

    def _in_rollback_window(self, state: RolloutState) -> bool:
        return (
            state.phase == PROMOTED
            and transitions.seconds_since(state.updated) <= state.plan.rollback_window_s
        )

    def _baseline(self, model: str, current: TrafficPolicy | None, candidate: int) -> int:
        """The version serving all of the model now; without a policy, the highest READY one besides the
        candidate (the one that served before the candidate loaded)."""
        if current is None:
            ready = [
                v.version for v in self._registry.model(model).ready_versions() if v.version != candidate
            ]
            if not ready:
                raise FailedPrecondition(
                    f"model '{model}' has no READY version besides {candidate} to compare with"
                )
            return max(ready)
        weighted = [v for v, w in current.weights.items() if w > 0]
        if len(weighted) != 1:
            raise FailedPrecondition(
                f"model '{model}' splits its traffic ({current.describe()}); a rollout starts from one "
                f"version serving everything (serving ctl promote {model} VERSION)"
            )
        if weighted[0] == candidate:
            raise RolloutError(f"to: version {candidate} already serves all of '{model}'")
        return weighted[0]

    def _check_model(self, model: str) -> None:
        if self._registry.loaded_model(model) is None:
            raise NotFound(f"unknown model '{model}' (or not loaded)")

    def _state_of(self, model: str, version: int) -> str:
        loaded = self._registry.loaded_model(model)
        found = loaded.versions.get(version) if loaded is not None else None
        return found.state.value if found is not None else "not loaded"
