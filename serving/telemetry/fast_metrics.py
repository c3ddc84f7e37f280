"""Counters and histograms for the per-request and per-batch series: the same exposition as
prometheus_client's Counter and Histogram (names, labels, buckets, `_total`, `_bucket`/`_count`/`_sum`,
`_created`), a fraction of the cost per update.

prometheus_client takes a lock for every value it moves and walks a histogram's buckets in a Python loop:
an observation is ≈ 0.85 µs warm and several times that with the cold caches a server has between
requests, and one request moves about 18 of them (docs/performance.md, Round 3). Here a child is a
plain list: `inc` adds to it, `observe` finds the bucket with `bisect` and adds to two entries.

Updates come from the event loop (the request path, and batches finishing, which the batcher reports on
the loop); a scrape reads from the /metrics thread. Reading a child copies its list in one step (atomic
under the GIL), so a scrape sees each series consistently (its `_count` is the sum of its buckets);
children added or removed during a scrape are simply there or not.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString


class CounterChild:
    __slots__ = ("value", "created")

    def __init__(self) -> None:
        self.value = [0.0]
        self.created = time.time()

    def inc(self, amount: float = 1.0) -> None:
        self.value[0] += amount


class HistogramChild:
    __slots__ = ("_bounds", "counts", "created")

    def __init__(self, bounds: Sequence[float]) -> None:
        self._bounds = bounds
        self.counts = [0.0] * (len(bounds) + 1)  # one per bucket (not cumulative), then the sum
        self.created = time.time()

    def observe(self, amount: float) -> None:
        counts = self.counts
        counts[bisect.bisect_left(self._bounds, amount)] += 1
        counts[-1] += amount


Child = TypeVar("Child", CounterChild, HistogramChild)


class _Family(Collector, Generic[Child]):
    """Children by label values, registered on `registry` as a collector; a subclass says how to make a
    child, which metric family it exposes, and how one child's samples go into it."""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], Child] = {}
        registry.register(self)

    def labels(self, *values: str) -> Child:
        """The child of these label values, made on first use."""
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._new_child()
        return child

    def _new_child(self) -> Child:
        raise NotImplementedError

    def remove_by_labels(self, labels: Mapping[str, str]) -> None:
        """Drop every child whose labels include all of `labels` (prometheus_client's method)."""
        unknown = set(labels) - set(self.labelnames)
        if unknown:
            raise ValueError(f"{self.name} has no labels {sorted(unknown)}")
        wanted = [(self.labelnames.index(name), value) for name, value in labels.items()]
        for key in [k for k in list(self._children) if all(k[i] == v for i, v in wanted)]:
            self._children.pop(key, None)

    def describe(self) -> Iterator[Metric]:
        yield self._family()

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for values, child in list(self._children.items()):
            self._add(family, values, child)
        yield family

    def _family(self) -> Metric:
        raise NotImplementedError

    def _add(self, family: Metric, values: tuple[str, ...], child: Child) -> None:
        raise NotImplementedError


class FastCounter(_Family[CounterChild]):
    def _new_child(self) -> CounterChild:
        return CounterChild()

    def _family(self) -> CounterMetricFamily:
        return CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def _add(self, family: Metric, values: tuple[str, ...], child: CounterChild) -> None:
        assert isinstance(family, CounterMetricFamily)
        family.add_metric(values, child.value[0], created=child.created)


class FastHistogram(_Family[HistogramChild]):
    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry,
        buckets: Sequence[float],
    ) -> None:
        bounds = [float(b) for b in buckets]
        if bounds[-1] != math.inf:
            bounds.append(math.inf)
        self._bounds = bounds
        self._le: list[str] = [floatToGoString(b) for b in bounds]  # type: ignore[no-untyped-call]
        super().__init__(name, documentation, labelnames, registry)

    def _new_child(self) -> HistogramChild:
        return HistogramChild(self._bounds)

    def _family(self) -> HistogramMetricFamily:
        return HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def _add(self, family: Metric, values: tuple[str, ...], child: HistogramChild) -> None:
        assert isinstance(family, HistogramMetricFamily)
        counts = list(child.counts)  # one step: a consistent copy
        cumulative, running = [], 0.0
        for le, count in zip(self._le, counts, strict=False):
            running += count
            cumulative.append((le, running))
        family.add_metric(values, cumulative, counts[-1])
        family.add_sample(
            f"{self.name}_created", dict(zip(self.labelnames, values, strict=True)), child.created
        )
