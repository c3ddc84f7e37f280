"""Prediction distributions, read at scrape time from `PredictionSource`s (serving.drift.engine.DriftEngine).

`PredictionCollector` exports `serving_predicted_class`, `serving_prediction_confidence` and
`serving_prediction_value`; nothing is counted per request here. Class labels are bounded: classes at or
beyond the limit are summed as OTHER_CLASS. docs/metrics.md lists the series.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

OTHER_CLASS = "_other"
_MVO = ("model", "version", "output")


@dataclass(frozen=True)
class BucketCounts:
    """A histogram of observations: counts[i] for values ≤ upper_bounds[i] (and above upper_bounds[i-1]);
    the last count is for values above every bound. Not cumulative."""

    upper_bounds: tuple[float, ...]
    counts: tuple[int, ...]  # len(upper_bounds) + 1
    total: float  # sum of the observed values


@dataclass(frozen=True)
class PredictionCounts:
    """Cumulative prediction distribution of one (model, version, output) since its monitor started."""

    model: str
    version: str
    output: str
    class_counts: tuple[int, ...] = ()  # classification: rows predicted (top-1) as each class
    confidence: BucketCounts | None = None  # classification: top-1 probability
    values: BucketCounts | None = None  # numeric: every (sampled) value


class PredictionSource(Protocol):
    def prediction_counts(self) -> Iterable[PredictionCounts]: ...


class PredictionCollector(Collector):
    def __init__(self, class_label_limit: int) -> None:
        self._sources: list[PredictionSource] = []
        self._limit = class_label_limit

    def add(self, source: PredictionSource) -> None:
        self._sources.append(source)

    def describe(self) -> Iterator[Metric]:
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        classes, confidence, values = self._families()
        for source in self._sources:
            for counts in source.prediction_counts():
                labels = [counts.model, counts.version, counts.output]
                for label, n in self._class_series(counts.class_counts):
                    classes.add_metric([*labels, label], n)
                if counts.confidence is not None:
                    confidence.add_metric(labels, _cumulative(counts.confidence), counts.confidence.total)
                if counts.values is not None:
                    values.add_metric(labels, _cumulative(counts.values), counts.values.total)
        yield from (classes, confidence, values)

    def _families(self) -> tuple[CounterMetricFamily, HistogramMetricFamily, HistogramMetricFamily]:
        return (
            CounterMetricFamily(
                "serving_predicted_class",
                "Rows whose top-1 prediction was this class "
                f"(classes ≥ {self._limit} are summed as '{OTHER_CLASS}').",
                labels=[*_MVO, "class"],
            ),
            HistogramMetricFamily(
                "serving_prediction_confidence",
                "Top-1 probability of classification rows.",
                labels=list(_MVO),
            ),
            HistogramMetricFamily(
                "serving_prediction_value",
                "Every value of numeric outputs (no _sum/_count when a bound is negative).",
                labels=list(_MVO),
            ),
        )

    def _class_series(self, class_counts: tuple[int, ...]) -> list[tuple[str, int]]:
        series = [(str(index), n) for index, n in enumerate(class_counts[: self._limit])]
        if len(class_counts) > self._limit:
            series.append((OTHER_CLASS, sum(class_counts[self._limit :])))
        return series


def _cumulative(buckets: BucketCounts) -> list[tuple[str, float]]:
    bounds = [repr(float(b)) for b in buckets.upper_bounds] + ["+Inf"]
    running, out = 0, []
    for bound, n in zip(bounds, buckets.counts, strict=True):
        running += n
        out.append((bound, float(running)))
    return out
