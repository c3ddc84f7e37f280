"""FastCounter and FastHistogram expose exactly what prometheus_client's Counter and Histogram would."""

from __future__ import annotations

import random
import re

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from serving.telemetry.fast_metrics import FastCounter, FastHistogram
from serving.telemetry.metrics import BATCH_SIZE_BUCKETS, LATENCY_BUCKETS

LABELS = ("model", "version", "stage")


def exposition(registry: CollectorRegistry) -> str:
    """The text exposition, creation times masked (they differ by the microseconds between the two)."""
    return re.sub(r"(_created\{[^}]*\}) \S+", r"\1 T", generate_latest(registry).decode())


def label_sets(rng: random.Random) -> list[tuple[str, str, str]]:
    return [(rng.choice("ab"), rng.choice("12"), rng.choice(("queue", "compute_infer"))) for _ in range(400)]


@pytest.mark.parametrize("buckets", [LATENCY_BUCKETS, BATCH_SIZE_BUCKETS, (1.0, 2.0, float("inf"))])
def test_histogram_exposition_matches_prometheus_client(buckets: tuple[float, ...]) -> None:
    rng = random.Random(7)
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    fast = FastHistogram("x_seconds", "Help text.", LABELS, ours, buckets)
    reference = Histogram("x_seconds", "Help text.", LABELS, registry=theirs, buckets=buckets)
    for labels in label_sets(rng):
        value = rng.choice((0.0, 1.0, 2.0, 64.0, 5e-5)) if rng.random() < 0.3 else rng.expovariate(100.0)
        fast.labels(*labels).observe(value)  # on the edges too: a value equal to a bound counts in it
        reference.labels(*labels).observe(value)
    assert exposition(ours) == exposition(theirs)
    fast.remove_by_labels({"model": "a", "version": "1"})
    reference.remove_by_labels({"model": "a", "version": "1"})
    assert exposition(ours) == exposition(theirs)
    assert 'model="a",stage="queue",version="1"' not in exposition(ours)


def test_counter_exposition_matches_prometheus_client() -> None:
    rng = random.Random(3)
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    fast = FastCounter("y_total", "Help text.", LABELS, ours)
    reference = Counter("y_total", "Help text.", LABELS, registry=theirs)
    for labels in label_sets(rng):
        amount = rng.choice((1, 1, 3, 64))
        fast.labels(*labels).inc(amount)
        reference.labels(*labels).inc(amount)
    assert exposition(ours) == exposition(theirs)
    fast.remove_by_labels({"version": "2"})
    reference.remove_by_labels({"version": "2"})
    assert exposition(ours) == exposition(theirs)
    with pytest.raises(ValueError, match="has no labels"):
        fast.remove_by_labels({"primary": "1"})
