"""The rollout's metrics (names proof's alert rule and dashboard use) and the interval arithmetic of evidence."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from serving.rollout.evidence import Snapshot, window
from serving.rollout.judge import FAIL, PASS, UNDECIDED, GateResult, Side
from serving.rollout.metrics import RolloutMetrics
from serving.rollout.plan import CANARY, SHADOW, parse_gates


def test_the_rollout_series_have_the_agreed_names_and_values() -> None:
    registry = CollectorRegistry()
    metrics = RolloutMetrics(registry)
    metrics.phase("digits", CANARY, 5.0, 1)
    errors, p99, drift = parse_gates("errors<=+0.5pp,p99<=1.25x,drift<=0.2")
    metrics.gates(
        "digits",
        [GateResult(errors, PASS, 0.001), GateResult(p99, UNDECIDED), GateResult(drift, FAIL, 0.9)],
    )
    metrics.decided("digits", "rollback")
    value = registry.get_sample_value
    assert value("serving_rollout_phase", {"model": "digits", "phase": "canary"}) == 1.0
    assert value("serving_rollout_phase", {"model": "digits", "phase": "shadow"}) == 0.0
    assert value("serving_rollout_candidate_percent", {"model": "digits"}) == 5.0
    assert value("serving_rollout_step", {"model": "digits"}) == 1.0
    assert value("serving_rollout_gate_passing", {"model": "digits", "gate": "errors"}) == 1.0
    assert value("serving_rollout_gate_passing", {"model": "digits", "gate": "p99"}) == -1.0
    assert value("serving_rollout_gate_passing", {"model": "digits", "gate": "drift"}) == 0.0
    assert value("serving_rollout_gate_statistic", {"model": "digits", "gate": "drift"}) == 0.9
    assert value("serving_rollout_gate_threshold", {"model": "digits", "gate": "errors"}) == 0.005
    assert value("serving_rollout_decisions_total", {"model": "digits", "decision": "rollback"}) == 1.0
    with pytest.raises(ValueError, match="unknown rollout decision"):
        metrics.decided("digits", "maybe")


def _side(ok: int, failed: int, latency: tuple[int, ...], classes: tuple[int, ...]) -> Side:
    return Side(ok, failed, latency, {"y": classes})


def test_an_interval_is_the_difference_of_two_snapshots() -> None:
    start = Snapshot(10.0, _side(10, 1, (5, 6), (3, 8)), _side(100, 2, (50, 52), (40, 62)), 9.0, 10, (4, 6))
    end = Snapshot(
        12.5, _side(30, 2, (15, 17), (13, 19)), _side(200, 3, (90, 113), (80, 123)), 27.5, 30, (9, 21)
    )
    evidence = window(start, end, CANARY)
    assert evidence is not None
    assert (evidence.candidate.ok, evidence.candidate.failed, evidence.candidate.latency) == (20, 1, (10, 11))
    assert evidence.baseline.predictions == {"y": (40, 61)}
    assert (evidence.agreement_sum, evidence.agreement_n, evidence.seconds) == (18.5, 20, 2.5)
    shadow = window(start, end, SHADOW)
    assert shadow is not None and shadow.candidate.latency == (5, 15)  # the shadow copies' latency


def test_a_counter_that_went_backwards_voids_the_interval() -> None:
    start = Snapshot(0.0, _side(10, 0, (5, 5), (5, 5)), _side(10, 0, (5, 5), (5, 5)))
    reloaded = Snapshot(1.0, _side(2, 0, (1, 1), (1, 1)), _side(20, 0, (10, 10), (10, 10)))
    assert window(start, reloaded, CANARY) is None
