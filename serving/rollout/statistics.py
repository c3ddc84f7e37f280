"""The judge's statistics: confidence intervals for the four kinds of gate, pure functions of counts.

    error rates      Agresti–Caffo interval of the difference of two proportions (add one success and
                     one failure to each side, then the Wald interval): well behaved at 0 errors
    latency          ratio of a quantile of two histograms (bucket counts, Prometheus buckets), linear
                     interpolation inside a bucket; the interval by a paired block bootstrap over time
                     blocks (controller ticks), or a (Poisson) bootstrap of both sides without blocks
    prediction drift PSI between the two sides' class (or value-bucket) counts, the project's `psi`
                     (serving.drift.statistics); the interval by a (Poisson) bootstrap of both sides
    agreement        Wilson score interval of the mean shadow agreement over the compared requests

Every interval is two-sided at confidence 1 - 2·alpha, i.e. each bound is a one-sided (1 - alpha) bound:
a gate fails only when the bound on the good side is already past the threshold, passes only when the
bound on the bad side is within it, and is undecided otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

from serving.drift.statistics import PSI_EPSILON

DEFAULT_ALPHA = 0.05
BOOTSTRAP_RESAMPLES = 400


def resample(
    counts: npt.NDArray[np.float64], rng: np.random.Generator, resamples: int
) -> npt.NDArray[np.float64]:
    """Poisson bootstrap of bin counts (each bin ~ Poisson(count)): the multinomial bootstrap's large-n
    approximation, drawn in one vectorised call."""
    drawn: npt.NDArray[np.float64] = rng.poisson(counts, size=(resamples, counts.size)).astype(np.float64)
    return drawn


@dataclass(frozen=True)
class Interval:
    estimate: float
    lower: float
    upper: float


def z_value(alpha: float) -> float:
    return NormalDist().inv_cdf(1.0 - alpha)


def difference_of_proportions(
    x_candidate: int, n_candidate: int, x_baseline: int, n_baseline: int, alpha: float = DEFAULT_ALPHA
) -> Interval:
    """p_candidate - p_baseline with its Agresti–Caffo interval (each side n >= 1)."""
    if n_candidate < 1 or n_baseline < 1:
        raise ValueError("each side needs at least one request")
    estimate = x_candidate / n_candidate - x_baseline / n_baseline
    pc, pb = (x_candidate + 1) / (n_candidate + 2), (x_baseline + 1) / (n_baseline + 2)
    se = math.sqrt(pc * (1 - pc) / (n_candidate + 2) + pb * (1 - pb) / (n_baseline + 2))
    z = z_value(alpha)
    return Interval(estimate, pc - pb - z * se, pc - pb + z * se)


def wilson(mean: float, n: int, alpha: float = DEFAULT_ALPHA) -> Interval:
    """Wilson interval of a proportion (or a mean of values in [0, 1], conservatively) over n >= 1."""
    if n < 1:
        raise ValueError("wilson needs n >= 1")
    p = min(max(mean, 0.0), 1.0)
    z = z_value(alpha)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return Interval(mean, max(centre - half, 0.0), min(centre + half, 1.0))


def histogram_quantiles(
    upper_bounds: Sequence[float], counts: npt.NDArray[np.float64], q: float
) -> npt.NDArray[np.float64]:
    """The q-quantile of each row of `counts` (rows of per-bucket counts, the last column above every
    bound), interpolated linearly inside its bucket as Prometheus' histogram_quantile does; a quantile
    in the overflow bucket is the highest bound."""
    rows = np.atleast_2d(np.asarray(counts, dtype=np.float64))
    edges = np.asarray([0.0, *upper_bounds, upper_bounds[-1]], dtype=np.float64)
    cumulative = np.cumsum(rows, axis=1)
    totals = np.maximum(cumulative[:, -1], 1e-12)
    rank = q * totals
    index = np.argmax(cumulative >= rank[:, None], axis=1)
    below = np.where(index > 0, cumulative[np.arange(len(rows)), np.maximum(index - 1, 0)], 0.0)
    inside = rows[np.arange(len(rows)), index]
    fraction = np.where(inside > 0, (rank - below) / np.where(inside > 0, inside, 1.0), 1.0)
    low, high = edges[index], edges[index + 1]
    result: npt.NDArray[np.float64] = low + (high - low) * np.clip(fraction, 0.0, 1.0)
    return result


def quantile_ratio(
    upper_bounds: Sequence[float],
    candidate: Sequence[int],
    baseline: Sequence[int],
    q: float,
    rng: np.random.Generator,
    alpha: float = DEFAULT_ALPHA,
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> Interval:
    """q-quantile(candidate) / q-quantile(baseline) from histogram counts, with a bootstrap interval."""
    c, b = np.asarray(candidate, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    if c.sum() < 1 or b.sum() < 1:
        raise ValueError("each side needs at least one observation")
    estimate = _ratio(histogram_quantiles(upper_bounds, c, q), histogram_quantiles(upper_bounds, b, q))[0]
    cs, bs = resample(c, rng, resamples), resample(b, rng, resamples)
    ratios = _ratio(histogram_quantiles(upper_bounds, cs, q), histogram_quantiles(upper_bounds, bs, q))
    lower, upper = np.quantile(ratios, [alpha, 1.0 - alpha])
    return Interval(float(estimate), float(lower), float(upper))


def quantile_ratio_blocks(
    upper_bounds: Sequence[float],
    candidate: npt.ArrayLike,
    baseline: npt.ArrayLike,
    q: float,
    rng: np.random.Generator,
    alpha: float = DEFAULT_ALPHA,
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> Interval:
    """The quantile ratio of `quantile_ratio`, its interval by a paired block bootstrap: row k of
    `candidate` and `baseline` are the two sides' histogram counts in the same short time block (a
    controller tick); blocks are resampled with replacement, the same blocks for both sides. Latency
    outliers come in bursts (a stalled process, a GC pause, a noisy neighbour) that hit both versions at
    once; resampling requests one by one would take a burst's requests for independent draws and make
    the interval of a tail quantile far too narrow, while resampling whole blocks keeps each burst whole
    and paired."""
    c, b = np.asarray(candidate, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    if c.ndim != 2 or c.shape != b.shape or c.sum() < 1 or b.sum() < 1:
        raise ValueError("both sides need counts per block over the same bins, and one observation each")
    estimate = _ratio(
        histogram_quantiles(upper_bounds, c.sum(axis=0), q),
        histogram_quantiles(upper_bounds, b.sum(axis=0), q),
    )[0]
    chosen = rng.integers(0, len(c), size=(resamples, len(c)))
    cs, bs = c[chosen].sum(axis=1), b[chosen].sum(axis=1)
    usable = (cs.sum(axis=1) > 0) & (bs.sum(axis=1) > 0)
    ratios = _ratio(
        histogram_quantiles(upper_bounds, cs[usable], q), histogram_quantiles(upper_bounds, bs[usable], q)
    )
    lower, upper = np.quantile(ratios, [alpha, 1.0 - alpha])
    return Interval(float(estimate), float(lower), float(upper))


def _ratio(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    floor = 1e-9  # a quantile of 0 (everything in the first bucket's bottom) must not divide by zero
    result: npt.NDArray[np.float64] = np.maximum(a, floor) / np.maximum(b, floor)
    return result


def psi_rows(expected: npt.NDArray[np.float64], actual: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """PSI of each row pair, as serving.drift.statistics.psi (proportions floored at PSI_EPSILON)."""
    p = np.maximum(expected / np.maximum(expected.sum(axis=1, keepdims=True), 1.0), PSI_EPSILON)
    q = np.maximum(actual / np.maximum(actual.sum(axis=1, keepdims=True), 1.0), PSI_EPSILON)
    result: npt.NDArray[np.float64] = np.sum((q - p) * np.log(q / p), axis=1)
    return result


def psi_interval(
    baseline: Sequence[int],
    candidate: Sequence[int],
    rng: np.random.Generator,
    alpha: float = DEFAULT_ALPHA,
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> Interval:
    """PSI(baseline → candidate) with a bootstrap interval (both sides resampled). The plug-in PSI is biased
    upwards (by about (bins - 1)·(1/n_b + 1/n_c) between equal distributions), and its bootstrap twice so:
    the percentile interval is shifted down by the bootstrap's bias (mean of the resamples − estimate)."""
    b, c = np.asarray(baseline, dtype=np.float64), np.asarray(candidate, dtype=np.float64)
    if b.shape != c.shape or b.sum() < 1 or c.sum() < 1:
        raise ValueError("both sides need counts over the same bins")
    estimate = float(psi_rows(b[None, :], c[None, :])[0])
    bs, cs = resample(b, rng, resamples), resample(c, rng, resamples)
    resampled = psi_rows(bs, cs)
    bias = float(np.mean(resampled)) - estimate
    lower, upper = np.quantile(resampled, [alpha, 1.0 - alpha]) - bias
    return Interval(estimate, max(float(lower), 0.0), max(float(upper), 0.0))
