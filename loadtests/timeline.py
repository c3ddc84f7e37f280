"""The parent's merged view of a run: per target, interval stats from every worker, and what follows.

Everything a report says about one target is computed here from the merged intervals: totals,
throughput, percentiles, the served-version split and its confidence interval, the split over
routing keys, and the stats of any time window (e.g. around an operator action).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from loadtests.histogram import LatencyHistogram
from loadtests.plan import TargetSpec
from loadtests.recorder import SIGNIFICANT_DIGITS, IntervalDeltas, IntervalStats, TargetTotals, WorkerFinished
from loadtests.slo import Observed
from loadtests.stats import wilson_interval

PERCENTILES: dict[str, float] = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p99.9": 99.9}
SPLIT_CHECK_CONFIDENCE = 0.99
WINDOW_SLACK_S = 1e-9  # index * interval_s is not exact in binary floating point


def ms(ns: float) -> float | None:
    return None if math.isnan(ns) else round(ns / 1e6, 4)


def latency_summary(hist: LatencyHistogram) -> dict[str, float | None]:
    if hist.count == 0:
        return {name: None for name in ("min", *PERCENTILES, "max", "mean")}
    values = {"min": ms(float(hist.min))}
    values.update({name: ms(hist.percentile(p)) for name, p in PERCENTILES.items()})
    values.update({"max": ms(float(hist.max)), "mean": ms(hist.mean)})
    return values


def window_summary(stats: IntervalStats) -> dict[str, Any]:
    return {
        "requests": stats.requests,
        "ok": stats.ok,
        "errors": dict(sorted(stats.errors.items())),
        "p50_ms": ms(stats.latency.percentile(50)),
        "p99_ms": ms(stats.latency.percentile(99)),
        "max_ms": ms(float(stats.latency.max)) if stats.ok else None,
        "versions": dict(sorted(stats.versions.items())),
    }


@dataclass(frozen=True)
class Share:
    version: str
    count: int
    share: float
    low: float
    high: float
    expected: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "count": self.count,
            "share": round(self.share, 6),
            "ci95": [round(self.low, 6), round(self.high, 6)],
            "expected": self.expected,
        }


def shares(
    counts: Mapping[str, int], expected: Mapping[str, float] | None, confidence: float = 0.95
) -> list[Share]:
    total = sum(counts.values())
    names = sorted(set(counts) | set(expected or {}), key=_version_order)
    result = []
    for name in names:
        n = counts.get(name, 0)
        low, high = wilson_interval(n, total, confidence)
        result.append(Share(name, n, n / total if total else 0.0, low, high, (expected or {}).get(name)))
    return result


def _version_order(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (1 << 62, version)


def normalise_split(weights: Mapping[str, float]) -> dict[str, float]:
    total = sum(weights.values())
    if total <= 0:
        raise ValueError("expected split weights must add up to more than 0")
    return {str(k): v / total for k, v in weights.items()}


@dataclass
class TargetResult:
    spec: TargetSpec
    duration_s: float
    interval_s: float
    intervals: dict[int, IntervalStats] = field(default_factory=dict)
    totals: TargetTotals = field(default_factory=TargetTotals)

    def add(self, index: int, stats: IntervalStats) -> None:
        slot = self.intervals.get(index)
        if slot is None:
            self.intervals[index] = slot = IntervalStats()
        slot.merge(stats)

    def add_totals(self, totals: TargetTotals) -> None:
        self.totals.lag.merge(totals.lag)
        for key, versions in totals.key_versions.items():
            self.totals.key_versions.setdefault(key, set()).update(versions)
        self.totals.last_completion_s = max(self.totals.last_completion_s, totals.last_completion_s)

    def window(self, start_s: float, end_s: float) -> IntervalStats:
        """Merged stats of requests intended within [start_s, end_s), at interval granularity: the
        intervals that lie wholly inside it. One that straddles a bound (the interval an action starts
        in) belongs to neither side, so requests sent after an action never count as before it."""
        merged = IntervalStats()
        for index, stats in self.intervals.items():
            t = index * self.interval_s
            if start_s <= t + WINDOW_SLACK_S and t + self.interval_s <= end_s + WINDOW_SLACK_S:
                merged.merge(stats)
        return merged

    def total(self) -> IntervalStats:
        return self.window(0.0, math.inf)

    @property
    def span_s(self) -> float:
        """From the start of measurement to the last reply (at least the duration)."""
        return max(self.duration_s, self.totals.last_completion_s)

    def observed(self, total: IntervalStats | None = None) -> Observed:
        total = total or self.total()
        return Observed(total.latency, total.requests, total.failed, total.ok / self.span_s, self.spec.batch)

    def version_shares(self, total: IntervalStats | None = None) -> list[Share]:
        expected = normalise_split(self.spec.expect_split) if self.spec.expect_split else None
        return shares((total or self.total()).versions, expected)

    def key_counts(self) -> tuple[dict[str, int], int]:
        """Distinct keys per version (keys that stayed on one version), and how many keys moved."""
        counts: dict[str, int] = {}
        moved = 0
        for versions in self.totals.key_versions.values():
            if len(versions) == 1:
                (only,) = versions
                counts[only] = counts.get(only, 0) + 1
            else:
                moved += 1
        return counts, moved

    def key_shares(self) -> list[Share]:
        expected = normalise_split(self.spec.expect_split) if self.spec.expect_split else None
        return shares(self.key_counts()[0], expected)

    def split_check(self, total: IntervalStats | None = None) -> dict[str, Any] | None:
        """Does the observed split match expect_split? Keys are the unit when requests carry keys."""
        if not self.spec.expect_split:
            return None
        expected = normalise_split(self.spec.expect_split)
        basis = "keys" if self.spec.keys else "requests"
        counts = self.key_counts()[0] if self.spec.keys else (total or self.total()).versions
        table = shares(counts, expected, SPLIT_CHECK_CONFIDENCE)
        misses = [s for s in table if not s.low <= (s.expected or 0.0) <= s.high]
        parts = ", ".join(f"{s.version}={s.share:.1%} (want {(s.expected or 0):.0%})" for s in table)
        return {
            "basis": basis,
            "confidence": SPLIT_CHECK_CONFIDENCE,
            "matches": not misses and sum(counts.values()) > 0,
            "line": f"split by {basis}: {parts}",
        }

    def series(self) -> list[dict[str, Any]]:
        rows = []
        last = math.ceil(self.duration_s / self.interval_s)  # later ones hold only stragglers' completions
        for index in sorted(i for i in self.intervals if 0 <= i < last):
            stats = self.intervals[index]
            hist = stats.latency
            rows.append(
                {
                    "t": round(index * self.interval_s, 6),
                    "requests": stats.requests,
                    "ok": stats.ok,
                    "completed": stats.completed,
                    "throughput": stats.completed / self.interval_s,
                    "errors": dict(sorted(stats.errors.items())),
                    "p50_ms": ms(hist.percentile(50)),
                    "p90_ms": ms(hist.percentile(90)),
                    "p99_ms": ms(hist.percentile(99)),
                    "max_ms": ms(float(hist.max)) if hist.count else None,
                    "versions": dict(sorted(stats.versions.items())),
                }
            )
        return rows


class Timeline:
    """Accumulates worker messages into one TargetResult per target."""

    def __init__(self, specs: Iterable[TargetSpec], duration_s: float, interval_s: float) -> None:
        self.targets = [TargetResult(spec, duration_s, interval_s) for spec in specs]

    def add(self, message: IntervalDeltas) -> None:
        for (target, index), stats in message.deltas.items():
            self.targets[target].add(index, stats)

    def finish(self, finished: Iterable[WorkerFinished]) -> None:
        for message in finished:
            for target, totals in zip(self.targets, message.totals, strict=True):
                target.add_totals(totals)


def empty_histogram() -> LatencyHistogram:
    return LatencyHistogram(SIGNIFICANT_DIGITS)
