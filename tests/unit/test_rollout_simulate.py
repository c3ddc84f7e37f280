"""A bounded run of the simulation behind docs/rollout.md's figures: healthy candidates are promoted,
bad ones rolled back on the gate they break."""

from __future__ import annotations

from serving.rollout.plan import PROMOTED, ROLLED_BACK, RolloutPlan, parse_gates
from serving.rollout.simulate import simulate

PLAN = RolloutPlan(
    candidate=2,
    steps=(10.0, 50.0, 100.0),
    step_time_s=10.0,
    gates=parse_gates("errors<=+0.5pp,p99<=1.25x,drift<=0.2"),
    min_requests=600,
)


def test_healthy_candidates_are_promoted_and_rarely_rolled_back() -> None:
    summary = simulate(PLAN, runs=40, rate=400.0, error_rate=0.002, kind="healthy", seed=11)
    assert summary.outcomes[ROLLED_BACK] <= 1, summary.text("healthy")
    assert summary.outcomes[PROMOTED] >= 38, summary.text("healthy")


def test_bad_candidates_are_rolled_back_on_their_gate() -> None:
    for kind, gate in (("errors", "errors"), ("slow", "p99"), ("drift", "drift")):
        summary = simulate(PLAN, runs=8, rate=400.0, error_rate=0.002, kind=kind, seed=12)
        assert summary.outcomes[ROLLED_BACK] == 8, summary.text(kind)
        assert summary.failed_gates[gate] >= 7, summary.text(kind)
