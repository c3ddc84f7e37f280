"""The judge's statistics and verdicts on drawn data: healthy candidates pass, bad ones fail, thin data holds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from serving.drift.statistics import psi
from serving.rollout import statistics as stats
from serving.rollout.judge import (
    ADVANCE,
    FAIL,
    HOLD,
    PASS,
    ROLLBACK,
    SKIPPED,
    UNDECIDED,
    Evidence,
    Side,
    judge,
)
from serving.rollout.plan import CANARY, SHADOW, parse_gates
from serving.telemetry.metrics import LATENCY_BUCKETS

GATES = parse_gates("errors<=+0.5pp,p99<=1.25x,agreement>=0.95,drift<=0.2")
CLASSES = np.array([0.3, 0.2, 0.15, 0.1, 0.1, 0.05, 0.04, 0.03, 0.02, 0.01])


def draw(
    rng: np.random.Generator, n: int, error_rate: float, latency_median_s: float, classes: np.ndarray
) -> Side:
    failed = int(rng.binomial(n, error_rate))
    latencies = rng.lognormal(math.log(latency_median_s), 0.35, size=n - failed)
    buckets = np.bincount(np.searchsorted(LATENCY_BUCKETS, latencies), minlength=len(LATENCY_BUCKETS) + 1)
    predicted = rng.multinomial(n - failed, classes)
    return Side(
        n - failed,
        failed,
        tuple(int(b) for b in buckets),
        {"probabilities": tuple(int(c) for c in predicted)},
    )


def evidence(
    candidate: Side, baseline: Side, phase: str = CANARY, agreement: float = 0.0, n: int = 0
) -> Evidence:
    return Evidence(candidate, baseline, tuple(LATENCY_BUCKETS), phase, agreement * n, n)


def test_agresti_caffo_interval_covers_the_difference_and_handles_zero_errors() -> None:
    interval = stats.difference_of_proportions(0, 500, 0, 5000)
    assert interval.estimate == 0.0 and interval.lower < 0.0 < interval.upper < 0.0052  # 520 candidate requests pass +0.5pp
    rng = np.random.default_rng(1)
    covered = 0
    for _ in range(400):
        x, y = rng.binomial(2000, 0.02), rng.binomial(2000, 0.01)
        i = stats.difference_of_proportions(int(x), 2000, int(y), 2000)
        covered += i.lower <= 0.01 <= i.upper
    assert covered / 400 > 0.85  # a 90 % interval


def test_histogram_quantile_interpolates_inside_the_bucket() -> None:
    bounds = (1.0, 2.0, 4.0)
    counts = np.array([0.0, 10.0, 10.0, 0.0])
    assert stats.histogram_quantiles(bounds, counts, 0.5)[0] == pytest.approx(2.0)
    assert stats.histogram_quantiles(bounds, counts, 0.75)[0] == pytest.approx(3.0)
    assert stats.histogram_quantiles(bounds, np.array([0.0, 0.0, 0.0, 5.0]), 0.9)[0] == 4.0  # overflow


def test_psi_interval_matches_the_projects_psi_and_is_near_zero_for_equal_distributions() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.multinomial(3000, CLASSES), rng.multinomial(3000, CLASSES)
    interval = stats.psi_interval(tuple(a), tuple(b), rng)
    assert interval.estimate == pytest.approx(psi(a, b))
    assert interval.lower <= 0.02 and interval.upper < 0.05


def test_a_healthy_candidate_passes_every_gate() -> None:
    rng = np.random.default_rng(3)
    base = draw(rng, 8000, 0.002, 0.004, CLASSES)
    cand = draw(rng, 4000, 0.002, 0.004, CLASSES)
    decision = judge(GATES, evidence(cand, base), 500, rng, shadow_ran=False)
    assert decision.decision == ADVANCE, decision.reason
    verdicts = {r.gate.name: r.verdict for r in decision.results}
    assert verdicts == {"errors": PASS, "p99": PASS, "agreement": SKIPPED, "drift": PASS}


@pytest.mark.parametrize(
    ("error_rate", "latency_s", "classes", "failed_gate"),
    [
        (0.03, 0.004, CLASSES, "errors"),
        (0.002, 0.012, CLASSES, "p99"),
        (0.002, 0.004, CLASSES[::-1].copy(), "drift"),
    ],
)
def test_a_bad_candidate_fails_the_gate_it_breaks(
    error_rate: float, latency_s: float, classes: np.ndarray, failed_gate: str
) -> None:
    rng = np.random.default_rng(4)
    base = draw(rng, 6000, 0.002, 0.004, CLASSES)
    cand = draw(rng, 3000, error_rate, latency_s, classes)
    decision = judge(GATES, evidence(cand, base), 500, rng)
    assert decision.decision == ROLLBACK and decision.failed_gate == failed_gate, decision.reason


def test_no_verdict_before_min_requests_and_the_status_says_why() -> None:
    rng = np.random.default_rng(5)
    base = draw(rng, 5000, 0.0, 0.004, CLASSES)
    cand = draw(rng, 120, 0.5, 0.04, CLASSES)  # terrible, but only 120 requests
    decision = judge(GATES, evidence(cand, base), 500, rng)
    assert decision.decision == HOLD
    assert all(r.verdict in (UNDECIDED, SKIPPED) for r in decision.results)
    assert "waiting for 500 requests per side (candidate 120, baseline 5000)" in decision.reason


def test_agreement_is_judged_in_the_shadow_phase() -> None:
    rng = np.random.default_rng(6)
    base, cand = draw(rng, 4000, 0.0, 0.004, CLASSES), draw(rng, 2000, 0.0, 0.004, CLASSES)
    good = judge(GATES, evidence(cand, base, SHADOW, 0.99, 2000), 500, rng)
    assert {r.gate.name: r.verdict for r in good.results}["agreement"] == PASS
    bad = judge(GATES, evidence(cand, base, SHADOW, 0.80, 2000), 500, rng)
    assert bad.decision == ROLLBACK and bad.failed_gate == "agreement"
    canary = judge(GATES, evidence(cand, base, CANARY), 500, rng, shadow_ran=True)
    assert {r.gate.name: r.detail for r in canary.results}["agreement"] == "judged in the shadow phase"


def test_a_gate_close_to_its_threshold_holds_instead_of_deciding() -> None:
    rng = np.random.default_rng(7)
    base = draw(rng, 600, 0.01, 0.004, CLASSES)
    cand = draw(rng, 600, 0.015, 0.004, CLASSES)  # +0.5pp: exactly at the threshold
    result = judge(parse_gates("errors<=+0.5pp"), evidence(cand, base), 500, rng)
    assert result.decision == HOLD and result.results[0].verdict == UNDECIDED
    assert result.results[0].verdict != FAIL
