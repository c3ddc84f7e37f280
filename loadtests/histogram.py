"""An HDR-style log-linear histogram of non-negative integers (latencies in nanoseconds).

Layout (HdrHistogram's, with a sparse dict instead of a dense array): values below
``2 * HALF`` (``HALF = 2**(SUB_BITS - 1)``) have a bucket each; above that, every power of two is cut
into ``HALF`` equal sub-buckets. With ``significant_digits=3`` SUB_BITS is 11 and HALF is 1024, so a
sub-bucket is at most 1/1024 of the values in it wide.

Precision, stated: a percentile is reported as the midpoint of its bucket (clamped to the exact
recorded min and max), so it lies within ``relative_precision = 1 / (2 * HALF)`` (0.049 % for 3
significant digits) of the exact sample value of the same rank. Percentiles interpolate between the
two neighbouring ranks exactly as ``numpy.percentile(..., method="linear")`` (numpy's default) does,
so the histogram agrees with numpy on the raw samples within that relative precision.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np


class LatencyHistogram:
    """Counts of values in log-linear buckets; mergeable, serialisable, percentile queries."""

    __slots__ = (
        "significant_digits",
        "_sub_bits",
        "_half_bits",
        "_counts",
        "count",
        "total",
        "min",
        "max",
        "_cache",
    )

    def __init__(self, significant_digits: int = 3) -> None:
        if not 1 <= significant_digits <= 5:
            raise ValueError(f"significant_digits must be 1..5, got {significant_digits}")
        self.significant_digits = significant_digits
        self._sub_bits = math.ceil(math.log2(2 * 10**significant_digits))
        self._half_bits = self._sub_bits - 1
        self._counts: dict[int, int] = {}
        self.count = 0
        self.total = 0
        self.min = 0
        self.max = 0
        self._cache: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def relative_precision(self) -> float:
        """Largest relative gap between a recorded value and the value reported for it."""
        return float(2.0**-self._sub_bits)

    def record(self, value: int, times: int = 1) -> None:
        if value < 0:
            value = 0
        shift = value.bit_length() - self._sub_bits
        index = value if shift <= 0 else (shift << self._half_bits) + (value >> shift)
        counts = self._counts
        counts[index] = counts.get(index, 0) + times
        if self.count == 0 or value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        self.count += times
        self.total += value * times
        self._cache = None

    def record_many(self, values: Iterable[int]) -> None:
        for value in values:
            self.record(int(value))

    def merge(self, other: LatencyHistogram) -> None:
        if other.significant_digits != self.significant_digits:
            raise ValueError("cannot merge histograms of different precision")
        if other.count == 0:
            return
        counts = self._counts
        for index, n in other._counts.items():
            counts[index] = counts.get(index, 0) + n
        self.min = other.min if self.count == 0 else min(self.min, other.min)
        self.max = max(self.max, other.max)
        self.count += other.count
        self.total += other.total
        self._cache = None

    def copy(self) -> LatencyHistogram:
        clone = LatencyHistogram(self.significant_digits)
        clone.merge(self)
        return clone

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else math.nan

    def bucket_range(self, index: int) -> tuple[int, int]:
        """The lowest and highest value that land in bucket ``index``."""
        if index < (2 << self._half_bits):
            return index, index
        shift = (index >> self._half_bits) - 1
        sub = index - (shift << self._half_bits)
        return sub << shift, ((sub + 1) << shift) - 1

    def _sorted(self) -> tuple[np.ndarray, np.ndarray]:
        if self._cache is None:
            indexes = sorted(self._counts)
            mids = np.array([sum(self.bucket_range(i)) / 2 for i in indexes], dtype=np.float64)
            cumulative = np.cumsum([self._counts[i] for i in indexes], dtype=np.int64)
            self._cache = (np.clip(mids, self.min, self.max), cumulative)
        return self._cache

    def value_at_rank(self, rank: int) -> float:
        """The (approximate) value of the ``rank``-th smallest sample, 0-based."""
        if not 0 <= rank < self.count:
            raise IndexError(f"rank {rank} outside 0..{self.count - 1}")
        if rank == 0:
            return float(self.min)
        if rank == self.count - 1:
            return float(self.max)
        mids, cumulative = self._sorted()
        return float(mids[int(np.searchsorted(cumulative, rank, side="right"))])

    def percentile(self, p: float) -> float:
        """numpy's default (linear) percentile of the recorded samples; NaN when empty."""
        if not 0.0 <= p <= 100.0:
            raise ValueError(f"percentile must be within 0..100, got {p}")
        if self.count == 0:
            return math.nan
        position = (self.count - 1) * p / 100.0
        low = math.floor(position)
        low_value = self.value_at_rank(low)
        fraction = position - low
        if fraction == 0.0:
            return low_value
        return low_value + fraction * (self.value_at_rank(low + 1) - low_value)

    def percentiles(self, ps: Iterable[float]) -> dict[float, float]:
        return {p: self.percentile(p) for p in ps}

    def to_dict(self) -> dict[str, Any]:
        indexes = sorted(self._counts)
        return {
            "significant_digits": self.significant_digits,
            "unit": "ns",
            "count": self.count,
            "total": self.total,
            "min": self.min,
            "max": self.max,
            "indexes": indexes,
            "counts": [self._counts[i] for i in indexes],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyHistogram:
        hist = cls(int(data["significant_digits"]))
        indexes, counts = list(data["indexes"]), list(data["counts"])
        if len(indexes) != len(counts):
            raise ValueError("histogram: indexes and counts differ in length")
        hist._counts = {int(i): int(n) for i, n in zip(indexes, counts, strict=True)}
        hist.count = int(data["count"])
        hist.total = int(data["total"])
        hist.min = int(data["min"])
        hist.max = int(data["max"])
        if sum(hist._counts.values()) != hist.count:
            raise ValueError("histogram: counts do not add up to count")
        return hist

    def __getstate__(self) -> dict[str, Any]:
        return self.to_dict()

    def __setstate__(self, state: dict[str, Any]) -> None:
        restored = LatencyHistogram.from_dict(state)
        for name in LatencyHistogram.__slots__:
            setattr(self, name, getattr(restored, name))
