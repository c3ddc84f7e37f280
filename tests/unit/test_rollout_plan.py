"""The rollout's plan, gates, state and persisted form; its transitions; sticky keys moving monotonically."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from serving.rollout import transitions
from serving.rollout.plan import (
    CANARY,
    PAUSED,
    PROMOTED,
    ROLLED_BACK,
    SHADOW,
    Gate,
    RolloutError,
    RolloutPlan,
    RolloutState,
    parse_duration,
    parse_gates,
    parse_steps,
)
from serving.traffic.policy import PolicyError, TrafficPolicy, rendezvous_choice
from serving.traffic.store import PolicyStore


def test_the_issues_gates_parse_into_thresholds() -> None:
    gates = parse_gates("errors<=+0.5pp,p99<=1.25x,agreement>=0.95,drift<=0.2")
    assert [(g.name, g.op, g.threshold, g.kind) for g in gates] == [
        ("errors", "<=", 0.005, "errors"),
        ("p99", "<=", 1.25, "latency"),
        ("agreement", ">=", 0.95, "agreement"),
        ("drift", "<=", 0.2, "drift"),
    ]
    assert gates[1].quantile == pytest.approx(0.99)
    assert parse_gates("p50<=2x")[0].quantile == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("errors<=5%", "is not one of"),
        ("p100<=1.2x", "percentile"),
        ("agreement>=1.5", "outside"),
        ("drift<=0.1,drift<=0.2", "more than once"),
        ("", "at least one gate"),
        ("latency<=2x", "is not one of"),
    ],
)
def test_a_bad_gate_is_refused_with_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(RolloutError, match=message):
        parse_gates(text)


def test_steps_and_durations() -> None:
    assert parse_steps("1,5,25,50,100") == (1, 5, 25, 50, 100)
    assert parse_steps("10,50") == (10, 50, 100)  # the promotion is always the last step
    for bad in ("5,1", "0,50", "50,150", "a,b", ""):
        with pytest.raises(RolloutError, match="steps"):
            parse_steps(bad)
    assert parse_duration("2s", "x") == 2.0
    assert parse_duration("2m", "x") == 120.0
    assert parse_duration("500ms", "x") == 0.5
    assert parse_duration("90", "x") == 90.0
    for bad in ("0s", "-1s", "2 weeks", ""):
        with pytest.raises(RolloutError, match="x"):
            parse_duration(bad, "x")


def test_a_plan_checks_its_fields() -> None:
    with pytest.raises(RolloutError, match="step_time"):
        RolloutPlan(candidate=2, step_time_s=0.1)
    with pytest.raises(RolloutError, match="min_requests"):
        RolloutPlan(candidate=2, min_requests=0)
    with pytest.raises(RolloutError, match="to: version"):
        RolloutPlan(candidate=0)
    with pytest.raises(RolloutError, match="shadow_fraction"):
        RolloutPlan(candidate=2, shadow_fraction=1.5)


def _state(**plan: object) -> RolloutState:
    return transitions.start(RolloutPlan(candidate=3, **plan), 1, "op").state  # type: ignore[arg-type]


def test_the_state_survives_traffic_json_exactly(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    store = PolicyStore(tmp_path)
    plan = RolloutPlan(candidate=3, gates=parse_gates("errors<=+0.7pp,p99<=1.3x,drift<=0.15"), step_time_s=2)
    move = transitions.start(plan, 1, "alice")
    store.save("m", move.policy, move.action, "alice", reason=move.reason, evidence={"gates": []})
    loaded = store.load("m")
    assert loaded == move.policy and loaded is not None and loaded.rollout == move.state
    entry = store.history("m")[-1]
    assert (entry.action, entry.reason, entry.evidence) == ("rollout", move.reason, {"gates": []})
    on_disk = json.loads((tmp_path / "m" / "traffic.json").read_text())
    assert on_disk["rollout"]["phase"] == CANARY and on_disk["weights"] == {"1": 99, "3": 1}


def test_a_policy_without_a_rollout_keeps_the_old_format() -> None:
    assert "rollout" not in TrafficPolicy({1: 100.0}).to_dict()
    with pytest.raises(PolicyError, match="rollout"):
        TrafficPolicy.from_dict({"weights": {"1": 100}, "rollout": {"phase": "canary"}})


def test_transitions_walk_the_steps_and_promote() -> None:
    state = _state(steps=(1.0, 5.0, 50.0))
    assert (state.phase, state.candidate_percent(), state.weights()) == (CANARY, 1.0, {1: 99.0, 3: 1.0})
    state = transitions.advance(state, "ok").state
    assert state.candidate_percent() == 5.0
    state = transitions.advance(state, "ok").state
    assert state.candidate_percent() == 50.0
    promoted = transitions.advance(state, "ok")
    assert promoted.state.phase == PROMOTED and promoted.decision == "promote"
    assert dict(promoted.policy.weights) == {1: 0.0, 3: 100.0}  # the baseline stays known for a rollback


def test_shadow_then_canary_then_rollback_records_the_gate() -> None:
    move = transitions.start(RolloutPlan(candidate=3, shadow_s=5.0, shadow_fraction=0.25), 1, "op")
    assert move.state.phase == SHADOW and move.policy.shadow is not None
    assert (move.policy.shadow.version, move.policy.shadow.fraction) == (3, 0.25)
    assert dict(move.policy.weights) == {1: 100.0}
    paused = transitions.pause(move.state, "op").state
    assert paused.phase == PAUSED and transitions.policy_for(paused).shadow is not None
    resumed = transitions.resume(paused, "op").state
    assert resumed.phase == SHADOW
    canary = transitions.advance(resumed, "ok").state
    assert canary.phase == CANARY and transitions.policy_for(canary).shadow is None
    back = transitions.rollback(canary, "p99 failed", "p99")
    assert back.state.phase == ROLLED_BACK and back.state.failed_gate == "p99"
    assert dict(back.policy.weights) == {1: 100.0} and back.policy.shadow is None
    with pytest.raises(RolloutError):
        transitions.resume(canary, "op")


def test_a_rollout_needs_baseline_traffic_to_judge() -> None:
    with pytest.raises(RolloutError, match="baseline traffic"):
        transitions.start(RolloutPlan(candidate=3, steps=(100.0,)), 1, "op")


def test_sticky_keys_only_move_to_the_candidate_as_its_share_grows() -> None:
    """Weighted rendezvous hashing: a key that reached the candidate stays there at every later step."""
    keys = [f"user-{i}" for i in range(4000)]
    previous: dict[str, int] = {}
    shares = []
    for percent in (1.0, 5.0, 25.0, 50.0, 99.0):
        weights = {1: 100.0 - percent, 3: percent}
        chosen = {key: rendezvous_choice("digits", weights, key) for key in keys}
        moved_back = [k for k, v in previous.items() if v == 3 and chosen[k] != 3]
        assert moved_back == [], f"{len(moved_back)} keys left the candidate at {percent}%"
        shares.append(sum(v == 3 for v in chosen.values()) / len(keys))
        previous = chosen
    for share, percent in zip(shares, (1.0, 5.0, 25.0, 50.0, 99.0), strict=True):
        assert abs(share - percent / 100) < 0.03, (share, percent)


def test_gate_dicts_round_trip() -> None:
    for gate in parse_gates("errors<=+0.5pp,p90<=1.5x,agreement>=0.9,drift<=0.25"):
        assert Gate.from_dict(json.loads(json.dumps(gate.to_dict()))) == gate
