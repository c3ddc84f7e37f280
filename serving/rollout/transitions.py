"""The rollout's state machine, pure: each transition returns the next `RolloutState` and the traffic
policy it implies, with the history action and the decision counted in the metrics.

    start      → shadow (plan.shadow_s > 0: baseline 100%, a copy of `shadow_fraction` to the candidate)
               → canary step 0 (otherwise)
    advance    shadow → canary step 0;  canary step i → step i+1;  the step before 100% → promoted
    rollback   → rolled_back: baseline 100%, no shadow, the failed gate recorded
    pause      shadow | canary → paused (the weights stay; nothing is judged)
    resume     paused → the phase it held (its interval starts again)
    abort      shadow | canary | paused, or promoted within the rollback window → rolled_back
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from serving.rollout.plan import (
    CANARY,
    PAUSED,
    PROMOTED,
    ROLLED_BACK,
    SHADOW,
    RolloutError,
    RolloutPlan,
    RolloutState,
)
from serving.traffic.policy import ShadowPolicy, TrafficPolicy


@dataclass(frozen=True)
class Transition:
    state: RolloutState
    policy: TrafficPolicy
    action: str  # the history entry's action
    decision: str  # serving_rollout_decisions_total's label ("" when not a decision: start, pause, resume)
    reason: str


def now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def policy_for(state: RolloutState) -> TrafficPolicy:
    shadow = None
    if state.judged_phase == SHADOW and state.active:
        shadow = ShadowPolicy(state.candidate, state.plan.shadow_fraction)
    return TrafficPolicy(state.weights(), state.plan.sticky, shadow, state)


def start(plan: RolloutPlan, baseline: int, source: str) -> Transition:
    if plan.shadow_s <= 0 and plan.steps[0] >= 100.0:
        raise RolloutError("steps: give a step below 100 (or --shadow): the judge needs baseline traffic")
    phase, step = (SHADOW, -1) if plan.shadow_s > 0 else (CANARY, 0)
    reason = f"rollout of v{plan.candidate} against v{baseline} started by {source}: " + (
        f"shadow for {plan.shadow_s:g}s" if phase == SHADOW else f"canary at {plan.steps[0]:g}%"
    )
    state = RolloutState(plan, baseline, phase, step, reason=reason, updated=now_text())
    return Transition(state, policy_for(state), "rollout", "", reason)


def advance(state: RolloutState, reason: str) -> Transition:
    if state.phase == SHADOW and state.plan.steps[0] < 100.0:
        nxt = state.moved(phase=CANARY, step=0, reason=reason, updated=now_text())
        return Transition(nxt, policy_for(nxt), "rollout-advance", "advance", reason)
    if state.phase not in (SHADOW, CANARY):
        raise RolloutError(f"cannot advance a rollout in phase {state.phase}")
    step = state.step + 1
    if step >= len(state.plan.steps) - 1 or state.plan.steps[step] >= 100.0:
        done = state.moved(phase=PROMOTED, step=len(state.plan.steps) - 1, reason=reason, updated=now_text())
        return Transition(done, policy_for(done), "rollout-promote", "promote", reason)
    nxt = state.moved(step=step, reason=reason, updated=now_text())
    return Transition(nxt, policy_for(nxt), "rollout-advance", "advance", reason)


def rollback(state: RolloutState, reason: str, failed_gate: str, *, abort: bool = False) -> Transition:
    done = state.moved(
        phase=ROLLED_BACK, paused_phase="", reason=reason, failed_gate=failed_gate, updated=now_text()
    )
    action, decision = ("rollout-abort", "abort") if abort else ("rollout-rollback", "rollback")
    return Transition(done, policy_for(done), action, decision, reason)


def pause(state: RolloutState, source: str) -> Transition:
    if state.phase not in (SHADOW, CANARY):
        raise RolloutError(f"only a running rollout can be paused; this one is {state.phase}")
    reason = f"paused by {source}"
    nxt = state.moved(phase=PAUSED, paused_phase=state.phase, reason=reason, updated=now_text())
    return Transition(nxt, policy_for(nxt), "rollout-pause", "", reason)


def resume(state: RolloutState, source: str) -> Transition:
    if state.phase != PAUSED:
        raise RolloutError(f"only a paused rollout can be resumed; this one is {state.phase}")
    reason = f"resumed by {source}"
    nxt = state.moved(phase=state.paused_phase or CANARY, paused_phase="", reason=reason, updated=now_text())
    return Transition(nxt, policy_for(nxt), "rollout-resume", "", reason)


def seconds_since(updated: str) -> float:
    try:
        when = datetime.fromisoformat(updated.replace("Z", "+00:00"))
    except ValueError:
        return float("inf")
    return (datetime.now(UTC) - when).total_seconds()
