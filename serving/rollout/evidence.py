"""Measuring what the candidate and the baseline did over one interval, from what the server already counts.

A `Snapshot` reads cumulative counters at one instant; the `Evidence` of an interval is the difference of
two snapshots (serving/rollout/judge.py judges it). Where each number comes from:

    requests, errors   each version's VersionStats (success / fail counts of ModelVersion.infer): every
                       request the version ran, routed, pinned or a shadow copy
    latency            canary: serving_request_duration_seconds{model,version} (client-facing, per served
                       version) from the server's CollectorRegistry; shadow phase: the candidate's shadow
                       copies (ShadowRunner's per-pair latency buckets, the same bucket bounds) against the
                       baseline's client-facing histogram
    predictions        the DriftEngine's cumulative class counts (classification outputs) or value-bucket
                       counts (numeric outputs) per version; the candidate's include its shadow copies
    agreement          ShadowRunner's per-pair agreement sum and count (shadow phase)

A counter that went backwards (the version was reloaded) makes the interval unusable: `window` returns
None and the controller starts a new interval from the newer snapshot.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from serving.drift.engine import DriftEngine
from serving.lifecycle.registry import ModelRegistry
from serving.rollout.judge import Evidence, Side
from serving.rollout.plan import SHADOW
from serving.telemetry.metrics import LATENCY_BUCKETS
from serving.traffic.shadow import ShadowRunner

LATENCY_SAMPLE = "serving_request_duration_seconds_bucket"


@dataclass(frozen=True)
class Snapshot:
    time: float
    candidate: Side
    baseline: Side
    agreement_sum: float = 0.0
    agreement_n: int = 0
    shadow_latency: tuple[int, ...] = field(default_factory=tuple)


class EvidenceSource:
    """Reads the server's counters for one (model, baseline, candidate) at a time."""

    def __init__(
        self,
        registry: ModelRegistry,
        shadows: ShadowRunner,
        metrics: CollectorRegistry | None,
        drift: DriftEngine | None,
    ) -> None:
        self._registry = registry
        self._shadows = shadows
        self._latency = metrics.restricted_registry([LATENCY_SAMPLE]) if metrics is not None else None
        self._drift = drift

    def snapshot(self, model: str, baseline: int, candidate: int, now: float) -> Snapshot:
        latency = self._latency_counts(model)
        predictions = self._predictions(model)
        sides = [
            self._side(model, v, latency.get(str(v), ()), predictions.get(str(v), {}))
            for v in (candidate, baseline)
        ]
        pair = next(
            (p for p in self._shadows.stats(model) if p.primary == baseline and p.shadow == candidate), None
        )
        if pair is None:
            return Snapshot(now, sides[0], sides[1])
        return Snapshot(
            now, sides[0], sides[1], pair.agreement_sum, pair.agreement_count, pair.latency_buckets
        )

    def _side(
        self, model: str, version: int, latency: tuple[int, ...], predictions: Mapping[str, tuple[int, ...]]
    ) -> Side:
        loaded = self._registry.loaded_model(model)
        served = loaded.versions.get(version) if loaded is not None else None
        if served is None:
            return Side(latency=latency, predictions=predictions)
        snap = served.stats.snapshot()
        return Side(snap.success.count, snap.fail.count, latency, predictions)

    def _latency_counts(self, model: str) -> dict[str, tuple[int, ...]]:
        """version → per-bucket counts (cumulative `le` series turned into per-bucket counts)."""
        if self._latency is None:
            return {}
        cumulative: dict[str, dict[float, float]] = {}
        for metric in self._latency.collect():
            for sample in metric.samples:
                if sample.name == LATENCY_SAMPLE and sample.labels.get("model") == model:
                    bound = float(sample.labels["le"])
                    cumulative.setdefault(sample.labels["version"], {})[bound] = sample.value
        return {version: _per_bucket(series) for version, series in cumulative.items()}

    def _predictions(self, model: str) -> dict[str, dict[str, tuple[int, ...]]]:
        if self._drift is None:
            return {}
        found: dict[str, dict[str, tuple[int, ...]]] = {}
        for counts in self._drift.prediction_counts():
            if counts.model != model:
                continue
            values = counts.class_counts or (counts.values.counts if counts.values is not None else ())
            if values:
                found.setdefault(counts.version, {})[counts.output] = tuple(int(v) for v in values)
        return found


def _per_bucket(series: Mapping[float, float]) -> tuple[int, ...]:
    bounds = [*LATENCY_BUCKETS, float("inf")]
    running = [int(series.get(b, 0.0)) for b in bounds]
    return tuple(n - (running[i - 1] if i else 0) for i, n in enumerate(running))


def window(start: Snapshot, end: Snapshot, phase: str) -> Evidence | None:
    """What happened between two snapshots; None when a counter went backwards (a reload)."""
    candidate = _difference(start.candidate, end.candidate)
    baseline = _difference(start.baseline, end.baseline)
    shadow_latency = _counts(start.shadow_latency, end.shadow_latency)
    agreement_n = end.agreement_n - start.agreement_n
    if candidate is None or baseline is None or shadow_latency is None or agreement_n < 0:
        return None
    if phase == SHADOW:  # the candidate answers copies only: its latency is the shadow copies'
        candidate = Side(candidate.ok, candidate.failed, shadow_latency, candidate.predictions)
    return Evidence(
        candidate=candidate,
        baseline=baseline,
        latency_bounds=tuple(LATENCY_BUCKETS),
        phase=phase,
        agreement_sum=max(end.agreement_sum - start.agreement_sum, 0.0),
        agreement_n=agreement_n,
        seconds=end.time - start.time,
    )


def _difference(start: Side, end: Side) -> Side | None:
    latency = _counts(start.latency, end.latency)
    if latency is None or end.ok < start.ok or end.failed < start.failed:
        return None
    predictions: dict[str, tuple[int, ...]] = {}
    for output, counts in end.predictions.items():
        diff = _counts(start.predictions.get(output, ()), counts)
        if diff is None:
            return None
        predictions[output] = diff
    return Side(end.ok - start.ok, end.failed - start.failed, latency, predictions)


def _counts(start: Iterable[int], end: Iterable[int]) -> tuple[int, ...] | None:
    before, after = tuple(start), tuple(end)
    if not after:
        return () if not before else None
    if not before:
        before = (0,) * len(after)
    if len(before) != len(after) or any(b > a for b, a in zip(before, after, strict=True)):
        return None
    return tuple(a - b for b, a in zip(before, after, strict=True))
