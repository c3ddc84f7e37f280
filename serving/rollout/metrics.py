"""The rollout's Prometheus series, registered on the registry passed in (docs/rollout.md lists them).

serving_rollout_phase{model,phase}                1 for the current phase, 0 for the others
serving_rollout_candidate_percent{model}          the candidate's share of routed traffic, 0..100
serving_rollout_step{model}                       index of the canary step (-1 in the shadow phase)
serving_rollout_gate_statistic{model,gate}        the gate's latest point estimate
serving_rollout_gate_threshold{model,gate}        its threshold
serving_rollout_gate_passing{model,gate}          1 pass (or skipped), 0 fail, -1 undecided
serving_rollout_decisions_total{model,decision}   advance, hold, promote, rollback, abort
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge

from serving.rollout.judge import GateResult
from serving.rollout.plan import PHASES

DECISIONS = ("advance", "hold", "promote", "rollback", "abort")


class RolloutMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self._phase = Gauge(
            "serving_rollout_phase",
            "1 for the rollout's current phase.",
            ["model", "phase"],
            registry=registry,
        )
        self._percent = Gauge(
            "serving_rollout_candidate_percent",
            "The rollout candidate's share of routed traffic (0..100).",
            ["model"],
            registry=registry,
        )
        self._step = Gauge(
            "serving_rollout_step",
            "Index of the rollout's canary step (-1: shadow).",
            ["model"],
            registry=registry,
        )
        gate_labels = ["model", "gate"]
        self._statistic = Gauge(
            "serving_rollout_gate_statistic",
            "A rollout gate's latest estimate.",
            gate_labels,
            registry=registry,
        )
        self._threshold = Gauge(
            "serving_rollout_gate_threshold", "A rollout gate's threshold.", gate_labels, registry=registry
        )
        self._passing = Gauge(
            "serving_rollout_gate_passing",
            "1 when a rollout gate passes, 0 when it fails, -1 while undecided.",
            gate_labels,
            registry=registry,
        )
        self._decisions = Counter(
            "serving_rollout_decisions_total",
            "Decisions of the rollout judge and operator (advance, hold, promote, rollback, abort).",
            ["model", "decision"],
            registry=registry,
        )

    def phase(self, model: str, phase: str, percent: float, step: int) -> None:
        for candidate in PHASES:
            self._phase.labels(model, candidate).set(1.0 if candidate == phase else 0.0)
        self._percent.labels(model).set(percent)
        self._step.labels(model).set(step)

    def gates(self, model: str, results: Iterable[GateResult]) -> None:
        for result in results:
            name = result.gate.name
            self._statistic.labels(model, name).set(
                result.statistic if not math.isnan(result.statistic) else 0.0
            )
            self._threshold.labels(model, name).set(result.gate.threshold)
            self._passing.labels(model, name).set(result.passing())

    def decided(self, model: str, decision: str) -> None:
        if decision not in DECISIONS:
            raise ValueError(f"unknown rollout decision {decision!r}; expected one of {DECISIONS}")
        self._decisions.labels(model, decision).inc()
