"""`RolloutView`: where a model's rollout stands, as `serving ctl rollout MODEL --status` shows it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from serving.rollout.judge import GateResult
from serving.rollout.plan import RolloutState


@dataclass(frozen=True)
class RolloutView:
    model: str
    phase: str  # idle, shadow, canary, paused, promoted, rolled_back
    baseline: int = 0
    candidate: int = 0
    step: int = -1
    steps: tuple[float, ...] = ()
    candidate_percent: float = 0.0
    paused_phase: str = ""
    reason: str = ""
    failed_gate: str = ""
    step_elapsed_s: float = 0.0
    next_decision_s: float = math.nan  # NaN: no decision due (paused, finished, idle)
    gates: tuple[GateResult, ...] = ()
    plan: dict[str, Any] = field(default_factory=dict)
    updated: str = ""
    sticky: bool = False
    rollback_window_left_s: float = 0.0

    @classmethod
    def of(
        cls,
        model: str,
        state: RolloutState,
        gates: tuple[GateResult, ...],
        *,
        reason: str,
        step_elapsed_s: float,
        next_decision_s: float,
        rollback_window_left_s: float,
    ) -> RolloutView:
        return cls(
            model=model,
            phase=state.phase,
            baseline=state.baseline,
            candidate=state.candidate,
            step=state.step,
            steps=state.plan.steps,
            candidate_percent=state.candidate_percent(),
            paused_phase=state.paused_phase,
            reason=reason,
            failed_gate=state.failed_gate,
            step_elapsed_s=step_elapsed_s,
            next_decision_s=next_decision_s,
            gates=gates,
            plan=state.plan.to_dict(),
            updated=state.updated,
            sticky=state.plan.sticky,
            rollback_window_left_s=rollback_window_left_s,
        )
