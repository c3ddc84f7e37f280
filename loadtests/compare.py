"""Candidate vs baseline under the same load: slower, faster, or no difference beyond noise.

Unit of comparison: the measurement interval (default 1 s). For each side we take the per-interval
p50 (and p99, and throughput) of every full interval with at least MIN_INTERVAL_REPLIES replies.
A difference is called when all three hold:

1. Mann-Whitney U (two-sided) on the per-interval values gives p < alpha (default 0.05);
2. the 95% percentile-bootstrap interval of median(candidate) / median(baseline) excludes 1;
3. the change is at least ``min_effect`` (default 3%), so a real but negligible shift is not a regression.

The verdict is on one primary metric (``--metric p50|p99|throughput``); the others are reported.
Live comparisons alternate the two versions in blocks (A B, then B A, …) so drift hits both.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

import numpy as np

from loadtests.histogram import LatencyHistogram
from loadtests.report import page, percentile_chart, table, verdict_box
from loadtests.results import SCHEMA
from loadtests.stats import bootstrap_ratio_ci, mann_whitney_u
from loadtests.svg import PALETTE, Axes, Series, line_chart

MIN_INTERVAL_REPLIES = 20
METRICS: dict[str, tuple[str, bool]] = {
    "p50": ("p50_ms", False),
    "p99": ("p99_ms", False),
    "throughput": ("throughput", True),
}


@dataclass(frozen=True)
class Side:
    """One side of a comparison: per-interval rows and the merged histogram."""

    label: str
    rows: tuple[Mapping[str, Any], ...]
    histogram: LatencyHistogram
    interval_s: float

    def values(self, key: str) -> list[float]:
        return [
            float(row[key]) for row in self.rows if row["ok"] >= MIN_INTERVAL_REPLIES and row[key] is not None
        ]


def side_from_documents(
    label: str, targets: Sequence[Mapping[str, Any]], durations: Sequence[float], interval_s: float
) -> Side:
    """Merge one or more target documents (blocks of a live compare, or one saved run) into a Side."""
    rows: list[Mapping[str, Any]] = []
    histogram = LatencyHistogram()
    for target, duration in zip(targets, durations, strict=True):
        rows += [row for row in target["intervals"] if row["t"] + interval_s <= duration + 1e-9]
        histogram.merge(LatencyHistogram.from_dict(target["histogram"]))
    return Side(label, tuple(rows), histogram, interval_s)


def pick_target(document: Mapping[str, Any], name: str | None) -> Mapping[str, Any]:
    targets: list[Mapping[str, Any]] = list(document.get("targets", []))
    if name is None:
        if len(targets) != 1:
            raise ValueError(f"the result holds {len(targets)} targets; name one with --target")
        return targets[0]
    for target in targets:
        if target["name"] == name:
            return target
    raise ValueError(f"no target {name!r} in the result; it holds {[t['name'] for t in targets]}")


def side_from_run(label: str, document: Mapping[str, Any], target: str | None = None) -> Side:
    if document.get("kind") != "run":
        raise ValueError(f"{label}: expected a run result, got kind {document.get('kind')!r}")
    timing = document["timing"]
    return side_from_documents(
        label, [pick_target(document, target)], [timing["duration_s"]], timing["interval_s"]
    )


@dataclass(frozen=True)
class MetricComparison:
    metric: str
    higher_is_better: bool
    baseline: float
    candidate: float
    ratio: float
    low: float
    high: float
    p_value: float
    n_baseline: int
    n_candidate: int
    significant: bool

    @property
    def worse(self) -> bool:
        return self.significant and ((self.ratio < 1) if self.higher_is_better else (self.ratio > 1))

    def describe(self) -> str:
        if math.isnan(self.ratio):
            return f"{self.metric}: not enough intervals ({self.n_baseline} vs {self.n_candidate})"
        change = (self.ratio - 1) * 100
        return (
            f"{self.metric} {change:+.1f}% "
            f"(95% CI {(self.low - 1) * 100:+.1f}%..{(self.high - 1) * 100:+.1f}%, "
            f"Mann-Whitney p={self.p_value:.2g}, {self.n_baseline} vs {self.n_candidate} intervals)"
        )

    def to_dict(self) -> dict[str, Any]:
        def clean(v: float) -> float | None:
            return None if math.isnan(v) else round(v, 6)

        return {
            "metric": self.metric,
            "baseline": clean(self.baseline),
            "candidate": clean(self.candidate),
            "ratio": clean(self.ratio),
            "ci95": [clean(self.low), clean(self.high)],
            "p_value": clean(self.p_value),
            "n_baseline": self.n_baseline,
            "n_candidate": self.n_candidate,
            "significant": self.significant,
            "line": self.describe(),
        }


def compare_metric(
    metric: str, baseline: Side, candidate: Side, alpha: float, min_effect: float, seed: int = 0
) -> MetricComparison:
    key, higher_is_better = METRICS[metric]
    a, b = baseline.values(key), candidate.values(key)
    test = mann_whitney_u(a, b)
    ratio, low, high = bootstrap_ratio_ci(a, b, seed=seed) if len(a) >= 2 and len(b) >= 2 else (math.nan,) * 3
    significant = (
        not math.isnan(ratio)
        and test.p_value < alpha
        and not low <= 1.0 <= high
        and abs(ratio - 1.0) >= min_effect
    )
    return MetricComparison(
        metric,
        higher_is_better,
        _median(a),
        _median(b),
        ratio,
        low,
        high,
        test.p_value,
        len(a),
        len(b),
        significant,
    )


def _median(values: Sequence[float]) -> float:
    return float(np.median(values)) if values else math.nan


@dataclass(frozen=True)
class Comparison:
    baseline: Side
    candidate: Side
    primary: str
    metrics: tuple[MetricComparison, ...]

    @property
    def main(self) -> MetricComparison:
        return next(m for m in self.metrics if m.metric == self.primary)

    @property
    def regressed(self) -> bool:
        return self.main.worse

    def line(self) -> str:
        main = self.main
        names = f"{self.candidate.label} vs {self.baseline.label}"
        if math.isnan(main.ratio):
            return f"INCONCLUSIVE {names}: {main.describe()}"
        if not main.significant:
            return f"NO SIGNIFICANT DIFFERENCE {names}: {main.describe()}"
        if main.higher_is_better:
            word = "LOWER THROUGHPUT" if main.worse else "HIGHER THROUGHPUT"
        else:
            word = "SLOWER" if main.worse else "FASTER"
        return f"{word} {names}: {main.describe()}"

    def to_json(self, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        def side(s: Side) -> dict[str, Any]:
            return {
                "label": s.label,
                "interval_s": s.interval_s,
                "histogram": s.histogram.to_dict(),
                "intervals": [dict(r) for r in s.rows],
            }

        return {
            "schema": SCHEMA,
            "kind": "compare",
            "primary": self.primary,
            **(extra or {}),
            "baseline": side(self.baseline),
            "candidate": side(self.candidate),
            "metrics": [m.to_dict() for m in self.metrics],
            "verdict": {"passed": not self.regressed, "line": self.line()},
        }


def compare_sides(
    baseline: Side, candidate: Side, primary: str = "p50", alpha: float = 0.05, min_effect: float = 0.03
) -> Comparison:
    if primary not in METRICS:
        raise ValueError(f"unknown metric {primary!r}; use one of {', '.join(METRICS)}")
    metrics = tuple(compare_metric(m, baseline, candidate, alpha, min_effect) for m in METRICS)
    return Comparison(baseline, candidate, primary, metrics)


def render_compare(document: Mapping[str, Any]) -> str:
    base, cand = document["baseline"], document["candidate"]

    def p50_series(side: Mapping[str, Any], color: str) -> Series:
        return Series(side["label"], [(i, r["p50_ms"]) for i, r in enumerate(side["intervals"])], color)

    units = {"p50": "p50 (ms)", "p99": "p99 (ms)", "throughput": "throughput (/s)"}
    rows = [
        [
            units.get(m["metric"], m["metric"]),
            _fmt(m["baseline"]),
            _fmt(m["candidate"]),
            "-" if m["ratio"] is None else f"{(m['ratio'] - 1) * 100:+.1f}%",
            "-"
            if m["ci95"][0] is None
            else f"{(m['ci95'][0] - 1) * 100:+.1f}% .. {(m['ci95'][1] - 1) * 100:+.1f}%",
            "-" if m["p_value"] is None else f"{m['p_value']:.2g}",
            "yes" if m["significant"] else "no",
        ]
        for m in document["metrics"]
    ]
    body = [
        f"<h1>Compare: {escape(cand['label'])} vs {escape(base['label'])}</h1>",
        verdict_box(document["verdict"]["passed"], document["verdict"]["line"], []),
        table(
            ["metric (per interval)", "baseline", "candidate", "change", "95% CI", "p", "beyond noise"], rows
        ),
        '<p class="meta">Per-interval medians compared with Mann-Whitney U and a bootstrap interval '
        "of the ratio "
        "of medians; see docs/loadtests.md.</p>",
        percentile_chart([(base["label"], base["histogram"]), (cand["label"], cand["histogram"])]),
        line_chart(
            [p50_series(base, PALETTE[0]), p50_series(cand, PALETTE[1])],
            Axes("p50 per interval", "interval #", "latency (ms)"),
        ),
    ]
    return page("Compare", body)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:,.3f}"
