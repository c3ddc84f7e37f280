"""Statistics for verdicts: proportion intervals, a rank test, and a bootstrap interval.

- Wilson score interval for an observed split share (better than the normal interval near 0 or 1
  and for small counts).
- Mann-Whitney U (two-sided, normal approximation with tie correction, no continuity correction)
  on per-interval medians: requests inside one run are autocorrelated, intervals much less so, so
  intervals are the unit of comparison.
- Percentile bootstrap of the ratio of medians (candidate / baseline) of those per-interval values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Values = Sequence[float] | npt.NDArray[np.float64]


def z_for(confidence: float) -> float:
    """Two-sided normal quantile: 0.95 → 1.95996."""
    return math.sqrt(2.0) * _erfinv(confidence)


def _erfinv(y: float) -> float:
    """Inverse error function by Newton's method on math.erf (enough for confidence levels)."""
    if not 0.0 < y < 1.0:
        raise ValueError(f"confidence must be within (0, 1), got {y}")
    x = 0.0
    for _ in range(100):
        step = (math.erf(x) - y) / (2.0 / math.sqrt(math.pi) * math.exp(-x * x))
        x -= step
        if abs(step) < 1e-12:
            break
    return x


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; (0, 1) when there are no trials."""
    if trials <= 0:
        return 0.0, 1.0
    z = z_for(confidence)
    p = successes / trials
    denominator = 1.0 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class RankTest:
    u: float  # U statistic of the candidate sample
    p_value: float
    n_baseline: int
    n_candidate: int


def mann_whitney_u(baseline: Values, candidate: Values) -> RankTest:
    """Two-sided Mann-Whitney U test; p = 1 when either side has fewer than 2 values or all tie."""
    a, b = np.asarray(baseline, dtype=float), np.asarray(candidate, dtype=float)
    n1, n2 = len(a), len(b)
    if n1 < 2 or n2 < 2:
        return RankTest(math.nan, 1.0, n1, n2)
    values = np.concatenate([a, b])
    ranks = _average_ranks(values)
    u_candidate = float(ranks[n1:].sum() - n2 * (n2 + 1) / 2)
    _, tie_counts = np.unique(values, return_counts=True)
    n = n1 + n2
    tie_term = float((tie_counts**3 - tie_counts).sum()) / (n * (n - 1))
    variance = n1 * n2 / 12.0 * ((n + 1) - tie_term)
    if variance <= 0:
        return RankTest(u_candidate, 1.0, n1, n2)
    z = (u_candidate - n1 * n2 / 2.0) / math.sqrt(variance)
    return RankTest(u_candidate, math.erfc(abs(z) / math.sqrt(2.0)), n1, n2)


def _average_ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=float)
    sorted_values = values[order]
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and sorted_values[j + 1] == sorted_values[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def bootstrap_ratio_ci(
    baseline: Values,
    candidate: Values,
    confidence: float = 0.95,
    resamples: int = 4000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(median ratio, low, high): percentile bootstrap of median(candidate) / median(baseline)."""
    a, b = np.asarray(baseline, dtype=float), np.asarray(candidate, dtype=float)
    if len(a) == 0 or len(b) == 0 or np.median(a) <= 0:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    a_medians = np.median(rng.choice(a, size=(resamples, len(a))), axis=1)
    b_medians = np.median(rng.choice(b, size=(resamples, len(b))), axis=1)
    ratios = b_medians / np.where(a_medians > 0, a_medians, np.nan)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.nanpercentile(ratios, [tail, 100.0 - tail])
    return float(np.median(b) / np.median(a)), float(low), float(high)
