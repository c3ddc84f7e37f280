"""The histogram's percentiles equal numpy's on the raw samples within its stated relative precision."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from loadtests.histogram import LatencyHistogram

PERCENTILES = [0, 1, 10, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.99, 100]


def synthetic(kind: str, n: int, seed: int) -> np.ndarray:
    """Latency-like samples in nanoseconds, 50µs to tens of seconds."""
    rng = np.random.default_rng(seed)
    if kind == "lognormal":
        return np.round(rng.lognormal(mean=math.log(2e6), sigma=1.0, size=n)).astype(np.int64)
    if kind == "uniform":
        return rng.integers(50_000, 60_000_000_000, size=n)
    if kind == "bimodal":
        return (
            np.concatenate([rng.normal(1e6, 1e5, n // 2), rng.normal(5e7, 5e6, n - n // 2)])
            .clip(0)
            .astype(np.int64)
        )
    return np.round(rng.exponential(3e6, size=n)).astype(np.int64)


@pytest.mark.parametrize("kind", ["lognormal", "uniform", "bimodal", "exponential"])
@pytest.mark.parametrize("n", [1, 2, 7, 1000, 50_000])
def test_percentiles_match_numpy_within_stated_precision(kind: str, n: int) -> None:
    data = synthetic(kind, n, seed=n)
    hist = LatencyHistogram(significant_digits=3)
    hist.record_many(data)
    for p in PERCENTILES:
        exact = float(np.percentile(data, p))  # numpy's default: linear interpolation
        assert abs(hist.percentile(p) - exact) <= hist.relative_precision * exact + 1e-9, (kind, n, p)


def test_stated_precision_is_below_a_thousandth_for_three_digits() -> None:
    assert LatencyHistogram(3).relative_precision < 1e-3
    assert LatencyHistogram(2).relative_precision < 1e-2


def test_small_values_are_exact() -> None:
    data = np.arange(0, 2048)
    hist = LatencyHistogram(3)
    hist.record_many(data)
    for p in (0, 12.5, 50, 99, 100):
        assert hist.percentile(p) == pytest.approx(float(np.percentile(data, p)), abs=1e-9)


def test_every_value_lands_in_a_bucket_that_contains_it() -> None:
    hist = LatencyHistogram(3)
    rng = np.random.default_rng(1)
    for value in [
        0,
        1,
        2047,
        2048,
        2049,
        4095,
        4096,
        10**9,
        2**40 + 12345,
        *rng.integers(0, 2**45, 200).tolist(),
    ]:
        probe = LatencyHistogram(3)
        probe.record(int(value))
        (index,) = probe.to_dict()["indexes"]
        low, high = hist.bucket_range(index)
        assert low <= value <= high
        assert high - low <= max(0, value) * probe.relative_precision * 2


def test_min_max_mean_count_are_exact() -> None:
    data = synthetic("lognormal", 5000, 3)
    hist = LatencyHistogram()
    hist.record_many(data)
    assert hist.count == len(data)
    assert hist.min == data.min() and hist.max == data.max()
    assert hist.mean == pytest.approx(data.mean())
    assert hist.percentile(0) == data.min() and hist.percentile(100) == data.max()


def test_merge_equals_recording_everything_in_one() -> None:
    a, b = synthetic("lognormal", 3000, 4), synthetic("exponential", 2000, 5)
    one, left, right = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
    one.record_many(np.concatenate([a, b]))
    left.record_many(a)
    right.record_many(b)
    left.merge(right)
    assert left.to_dict() == one.to_dict()
    assert [left.percentile(p) for p in PERCENTILES] == [one.percentile(p) for p in PERCENTILES]


def test_merge_into_empty_and_of_empty() -> None:
    hist, empty = LatencyHistogram(), LatencyHistogram()
    hist.record(500)
    hist.merge(empty)
    empty.merge(hist)
    assert empty.min == 500 and empty.count == 1


def test_serialisation_round_trips() -> None:
    hist = LatencyHistogram()
    hist.record_many(synthetic("bimodal", 1000, 6))
    assert LatencyHistogram.from_dict(hist.to_dict()).to_dict() == hist.to_dict()
    assert pickle.loads(pickle.dumps(hist)).to_dict() == hist.to_dict()


def test_empty_histogram_has_no_percentiles() -> None:
    assert math.isnan(LatencyHistogram().percentile(50))
    assert math.isnan(LatencyHistogram().mean)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        LatencyHistogram().percentile(101)
    with pytest.raises(ValueError):
        LatencyHistogram(significant_digits=0)
    with pytest.raises(ValueError):
        LatencyHistogram(3).merge(LatencyHistogram(2))
    broken = LatencyHistogram()
    broken.record(5)
    data = broken.to_dict() | {"count": 2}
    with pytest.raises(ValueError):
        LatencyHistogram.from_dict(data)
