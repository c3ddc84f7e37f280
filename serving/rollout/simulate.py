"""How often the judge rolls back a healthy candidate by chance, and how fast it catches bad ones.

    python -m serving.rollout.simulate [--runs 200] [--rate 200] [--steps 1,5,25,50,100] [--step-time 60]
        [--gate ...] [--min-requests 500] [--error-rate 0.002] [--candidate healthy|errors|slow|drift]

Each run drives the controller's state machine (serving/rollout/transitions.py) and judge over drawn
traffic as the controller does (a settling time, then one latency block per tick, a verdict after each
step time, a held step judged again one step time later): `rate` requests/s split by the step's share,
each request failing with `error_rate`, its latency lognormal (median 4 ms, σ 0.35) counted in the
server's latency buckets, its top-1 class drawn from a skewed 10-class distribution. A healthy
candidate draws from the baseline's distributions; a bad one has +2pp errors, 1.6× latency, or its
classes permuted.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import Counter
from dataclasses import dataclass

import numpy as np

from serving.rollout import transitions
from serving.rollout.judge import HOLD, ROLLBACK, Evidence, Side, judge
from serving.rollout.plan import DEFAULT_GATES, PROMOTED, ROLLED_BACK, RolloutPlan, parse_gates, parse_steps
from serving.rollout.statistics import wilson
from serving.telemetry.metrics import LATENCY_BUCKETS

CLASSES = np.array([0.3, 0.2, 0.15, 0.1, 0.1, 0.05, 0.04, 0.03, 0.02, 0.01])
MEDIAN_LATENCY_S = 0.004
MAX_HOLD_STEPS = 20  # a run still holding after 20 step times counts as held


@dataclass(frozen=True)
class Traffic:
    error_rate: float
    latency_scale: float = 1.0
    classes: tuple[float, ...] = tuple(CLASSES)


CANDIDATES = {
    "healthy": lambda e: Traffic(e),
    "errors": lambda e: Traffic(e + 0.02),
    "slow": lambda e: Traffic(e, 1.6),
    "drift": lambda e: Traffic(e, 1.0, tuple(CLASSES[::-1])),
}


def draw(rng: np.random.Generator, n: int, traffic: Traffic) -> Side:
    failed = int(rng.binomial(n, traffic.error_rate)) if n else 0
    latencies = rng.lognormal(math.log(MEDIAN_LATENCY_S * traffic.latency_scale), 0.35, size=n - failed)
    buckets = np.bincount(np.searchsorted(LATENCY_BUCKETS, latencies), minlength=len(LATENCY_BUCKETS) + 1)
    classes = rng.multinomial(n - failed, np.asarray(traffic.classes))
    return Side(n - failed, failed, tuple(int(b) for b in buckets), {"y": tuple(int(c) for c in classes)})


def add(a: Side, b: Side) -> Side:
    if not a.latency:
        return b
    latency = tuple(x + y for x, y in zip(a.latency, b.latency, strict=True))
    predictions = {
        k: tuple(x + y for x, y in zip(a.predictions[k], b.predictions[k], strict=True))
        for k in b.predictions
    }
    return Side(a.ok + b.ok, a.failed + b.failed, latency, predictions)


def run_once(
    plan: RolloutPlan, rate: float, baseline: Traffic, candidate: Traffic, rng: np.random.Generator
) -> tuple[str, str, float]:
    """One rollout: (outcome, failed gate, seconds). outcome: promoted, rolled_back or held."""
    state = transitions.start(plan, 1, "simulation").state
    tick = min(1.0, plan.step_time_s / 5)
    ticks_per_look = max(round(plan.step_time_s / tick), 1)
    clock = 0.0
    while state.active:
        share = state.candidate_percent() / 100.0
        c, b, blocks = Side(), Side(), []
        clock += min(plan.step_time_s, 2.0)  # the settling time (serving/rollout/controller.py)
        for _look in range(MAX_HOLD_STEPS):
            for _ in range(ticks_per_look):  # one block per controller tick
                cb = draw(rng, int(rng.poisson(rate * share * tick)), candidate)
                bb = draw(rng, int(rng.poisson(rate * (1 - share) * tick)), baseline)
                c, b = add(c, cb), add(b, bb)
                blocks.append((cb.latency, bb.latency))
            clock += plan.step_time_s
            evidence = Evidence(c, b, tuple(LATENCY_BUCKETS), state.phase, latency_blocks=tuple(blocks))
            verdict = judge(plan.gates, evidence, plan.min_requests, rng)
            if verdict.decision == ROLLBACK:
                return ROLLED_BACK, verdict.failed_gate, clock
            if verdict.decision != HOLD:
                state = transitions.advance(state, verdict.reason).state
                break
        else:
            return "held", "", clock
    return (PROMOTED if state.phase == PROMOTED else state.phase), "", clock


@dataclass(frozen=True)
class Summary:
    runs: int
    outcomes: Counter[str]
    failed_gates: Counter[str]
    mean_seconds: float

    def rate(self, outcome: str) -> float:
        return self.outcomes[outcome] / self.runs

    def text(self, label: str) -> str:
        rolled = self.outcomes[ROLLED_BACK]
        interval = wilson(rolled / self.runs, self.runs, 0.025)
        gates = ", ".join(f"{g}: {n}" for g, n in sorted(self.failed_gates.items())) or "none"
        return (
            f"{label}: {self.runs} runs: promoted {self.outcomes[PROMOTED]}, rolled back {rolled} "
            f"({100 * rolled / self.runs:.2f}%, 95% interval "
            f"{100 * interval.lower:.2f}-{100 * interval.upper:.2f}%), "
            f"held {self.outcomes['held']}; failed gates: {gates}; mean {self.mean_seconds:.0f}s simulated"
        )


def simulate(
    plan: RolloutPlan, runs: int, rate: float, error_rate: float, kind: str, seed: int = 0
) -> Summary:
    rng = np.random.default_rng(seed)
    baseline, candidate = Traffic(error_rate), CANDIDATES[kind](error_rate)
    outcomes: Counter[str] = Counter()
    gates: Counter[str] = Counter()
    seconds = 0.0
    for _ in range(runs):
        outcome, gate, spent = run_once(plan, rate, baseline, candidate, rng)
        outcomes[outcome] += 1
        if gate:
            gates[gate] += 1
        seconds += spent
    return Summary(runs, outcomes, gates, seconds / runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m serving.rollout.simulate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--rate", type=float, default=200.0, help="requests/s to the model")
    parser.add_argument("--steps", default="1,5,25,50,100")
    parser.add_argument("--step-time", type=float, default=60.0, help="seconds")
    parser.add_argument("--gate", default=DEFAULT_GATES.replace(",agreement>=0.95", ""))
    parser.add_argument("--min-requests", type=int, default=500)
    parser.add_argument("--error-rate", type=float, default=0.002, help="the baseline's")
    parser.add_argument("--candidate", choices=sorted(CANDIDATES), default="healthy")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    plan = RolloutPlan(
        candidate=2,
        steps=parse_steps(args.steps),
        step_time_s=args.step_time,
        gates=parse_gates(args.gate),
        min_requests=args.min_requests,
    )
    summary = simulate(plan, args.runs, args.rate, args.error_rate, args.candidate, args.seed)
    print(
        summary.text(
            f"{args.candidate} candidate, {args.rate:g} req/s, gates {plan.gate_text()}, "
            f"steps {args.steps}, {args.step_time:g}s per step, min {args.min_requests} requests"
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
