"""The judge: candidate against baseline over the same interval, one verdict per gate, then a decision.

`Evidence` is what both versions did in one interval (serving/rollout/evidence.py measures it from the
server; serving/rollout/simulate.py draws it). `judge_gate` gives each gate PASS, FAIL, UNDECIDED or
SKIPPED with the statistic, its interval and the counts behind it; `decide` turns the verdicts into
advance (every gate passes or is skipped), rollback (a gate fails) or hold (the rest).

No verdict before each side has `min_requests`: such a gate is UNDECIDED and says what it waits for.
The agreement gate is judged only in the shadow phase (it needs shadow copies); in the canary phase it
is SKIPPED, having passed in the shadow phase when there was one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from serving.rollout import statistics as stats
from serving.rollout.plan import SHADOW, Gate

PASS, FAIL, UNDECIDED, SKIPPED = "pass", "fail", "undecided", "skipped"
ADVANCE, HOLD, ROLLBACK = "advance", "hold", "rollback"


@dataclass(frozen=True)
class Side:
    """One version's requests in the interval."""

    ok: int = 0
    failed: int = 0
    latency: tuple[int, ...] = ()  # per-bucket counts over Evidence.latency_bounds (+ the overflow)
    predictions: Mapping[str, tuple[int, ...]] = field(default_factory=dict)  # output → class/bin counts

    @property
    def requests(self) -> int:
        return self.ok + self.failed


@dataclass(frozen=True)
class Evidence:
    candidate: Side
    baseline: Side
    latency_bounds: tuple[float, ...]
    phase: str  # shadow or canary
    agreement_sum: float = 0.0  # shadow phase: sum of per-comparison agreement
    agreement_n: int = 0
    seconds: float = 0.0
    # per time block (controller tick): (candidate, baseline) latency counts, for the paired block bootstrap
    latency_blocks: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...] = ()


@dataclass(frozen=True)
class GateResult:
    gate: Gate
    verdict: str
    statistic: float = math.nan
    lower: float = math.nan
    upper: float = math.nan
    candidate_count: int = 0
    baseline_count: int = 0
    detail: str = ""

    def passing(self) -> int:
        """For serving_rollout_gate_passing: 1 pass (or skipped), 0 fail, -1 undecided."""
        return {PASS: 1, SKIPPED: 1, FAIL: 0}.get(self.verdict, -1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "gate": self.gate.name,
            "op": self.gate.op,
            "threshold": self.gate.threshold,
            "statistic": _json_number(self.statistic),
            "lower": _json_number(self.lower),
            "upper": _json_number(self.upper),
            "verdict": self.verdict,
            "candidate_count": self.candidate_count,
            "baseline_count": self.baseline_count,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class Decision:
    decision: str  # advance, hold, rollback
    results: tuple[GateResult, ...]
    reason: str

    @property
    def failed_gate(self) -> str:
        return next((r.gate.name for r in self.results if r.verdict == FAIL), "")

    def evidence(self) -> dict[str, Any]:
        return {"gates": [r.to_dict() for r in self.results]}


def _json_number(value: float) -> float | None:
    return None if math.isnan(value) else value


def judge(
    gates: Sequence[Gate],
    evidence: Evidence,
    min_requests: int,
    rng: np.random.Generator,
    alpha: float = stats.DEFAULT_ALPHA,
    shadow_ran: bool = False,
) -> Decision:
    results = tuple(judge_gate(g, evidence, min_requests, rng, alpha, shadow_ran) for g in gates)
    return decide(results)


def decide(results: tuple[GateResult, ...]) -> Decision:
    failed = [r for r in results if r.verdict == FAIL]
    if failed:
        return Decision(ROLLBACK, results, "; ".join(f"{r.gate.text()} failed: {r.detail}" for r in failed))
    waiting = [r for r in results if r.verdict == UNDECIDED]
    if waiting:
        return Decision(HOLD, results, "; ".join(f"{r.gate.text()} undecided: {r.detail}" for r in waiting))
    return Decision(ADVANCE, results, "every gate passed: " + ", ".join(_short(r) for r in results))


def _short(result: GateResult) -> str:
    if result.verdict == SKIPPED:
        return f"{result.gate.name} skipped"
    return f"{result.gate.name}={result.statistic:.4g} [{result.lower:.4g}, {result.upper:.4g}]"


def judge_gate(
    gate: Gate,
    evidence: Evidence,
    min_requests: int,
    rng: np.random.Generator,
    alpha: float = stats.DEFAULT_ALPHA,
    shadow_ran: bool = False,
) -> GateResult:
    c, b = evidence.candidate, evidence.baseline
    if gate.kind == "agreement":
        return _agreement(gate, evidence, min_requests, alpha, shadow_ran)
    if c.requests < min_requests or b.requests < min_requests:
        return GateResult(
            gate,
            UNDECIDED,
            candidate_count=c.requests,
            baseline_count=b.requests,
            detail=f"waiting for {min_requests} requests per side "
            f"(candidate {c.requests}, baseline {b.requests})",
        )
    if gate.kind == "errors":
        interval = stats.difference_of_proportions(c.failed, c.requests, b.failed, b.requests, alpha)
        return _verdict(gate, interval, c.requests, b.requests, "error-rate difference")
    if gate.kind == "latency":
        if sum(c.latency) < 1 or sum(b.latency) < 1:
            return GateResult(
                gate,
                UNDECIDED,
                candidate_count=sum(c.latency),
                baseline_count=sum(b.latency),
                detail="no latency observed on one side yet",
            )
        return _latency(gate, evidence, rng, alpha)
    return _drift(gate, evidence, rng, alpha)


MIN_LATENCY_BLOCKS = 10


def _latency(gate: Gate, evidence: Evidence, rng: np.random.Generator, alpha: float) -> GateResult:
    c, b = evidence.candidate, evidence.baseline
    if not evidence.latency_blocks:
        ratio = stats.quantile_ratio(evidence.latency_bounds, c.latency, b.latency, gate.quantile, rng, alpha)
        return _verdict(gate, ratio, sum(c.latency), sum(b.latency), f"{gate.name} ratio")
    blocks = [(cb, bb) for cb, bb in evidence.latency_blocks if cb and bb]
    if sum(1 for cb, bb in blocks if sum(cb) and sum(bb)) < MIN_LATENCY_BLOCKS:
        return GateResult(
            gate,
            UNDECIDED,
            candidate_count=sum(c.latency),
            baseline_count=sum(b.latency),
            detail=f"waiting for {MIN_LATENCY_BLOCKS} ticks with latency on both sides",
        )
    ratio = stats.quantile_ratio_blocks(
        evidence.latency_bounds, [cb for cb, _ in blocks], [bb for _, bb in blocks], gate.quantile, rng, alpha
    )
    return _verdict(gate, ratio, sum(c.latency), sum(b.latency), f"{gate.name} ratio")


def _verdict(gate: Gate, interval: stats.Interval, nc: int, nb: int, what: str) -> GateResult:
    """`<=` gates: fail when the lower bound is over the threshold, pass when the upper bound is within."""
    text = f"{what} {interval.estimate:.4g}, interval [{interval.lower:.4g}, {interval.upper:.4g}]"
    if gate.op == "<=":
        verdict = (
            FAIL
            if interval.lower > gate.threshold
            else PASS
            if interval.upper <= gate.threshold
            else UNDECIDED
        )
        relation = {FAIL: "over", PASS: "within", UNDECIDED: "straddles"}[verdict]
    else:
        verdict = (
            FAIL
            if interval.upper < gate.threshold
            else PASS
            if interval.lower >= gate.threshold
            else UNDECIDED
        )
        relation = {FAIL: "under", PASS: "at or over", UNDECIDED: "straddles"}[verdict]
    detail = f"{text} {relation} {gate.op}{gate.threshold:g}"
    return GateResult(gate, verdict, interval.estimate, interval.lower, interval.upper, nc, nb, detail)


def _agreement(
    gate: Gate, evidence: Evidence, min_requests: int, alpha: float, shadow_ran: bool
) -> GateResult:
    if evidence.phase != SHADOW:
        detail = "judged in the shadow phase" if shadow_ran else "no shadow phase ran (--shadow)"
        return GateResult(gate, SKIPPED, detail=detail)
    n = evidence.agreement_n
    if n < min_requests:
        return GateResult(
            gate,
            UNDECIDED,
            candidate_count=n,
            baseline_count=n,
            detail=f"waiting for {min_requests} compared shadow copies (have {n})",
        )
    interval = stats.wilson(evidence.agreement_sum / n, n, alpha)
    return _verdict(gate, interval, n, n, "shadow agreement")


def _drift(gate: Gate, evidence: Evidence, rng: np.random.Generator, alpha: float) -> GateResult:
    c, b = evidence.candidate, evidence.baseline
    worst: GateResult | None = None
    for output in sorted(set(c.predictions) & set(b.predictions)):
        cc, bb = c.predictions[output], b.predictions[output]
        if len(cc) != len(bb) or sum(cc) < 1 or sum(bb) < 1:
            continue
        result = _verdict(gate, stats.psi_interval(bb, cc, rng, alpha), sum(cc), sum(bb), f"PSI of {output}")
        if worst is None or _rank(result) > _rank(worst):
            worst = result
    if worst is None:
        return GateResult(
            gate,
            UNDECIDED,
            candidate_count=c.requests,
            baseline_count=b.requests,
            detail="no prediction distribution of both versions yet (drift monitoring)",
        )
    return worst


def _rank(result: GateResult) -> tuple[int, float]:
    return ({PASS: 0, UNDECIDED: 1, FAIL: 2}[result.verdict], result.statistic)
