"""Drift statistics between two distributions: pure functions of count vectors or value samples.

Classification outputs are compared with `psi` and `js_distance` (on class counts or confidence-bin
counts); numeric outputs with `ks_statistic` and `wasserstein` (on value samples). docs/metrics.md has
the formulas. JS distance uses base 2 (range 0..1). PSI floors proportions at PSI_EPSILON.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

PSI_EPSILON = 1e-4


def _proportions(counts: npt.ArrayLike) -> npt.NDArray[np.float64]:
    p = np.asarray(counts, dtype=np.float64)
    if p.ndim != 1 or p.size == 0 or np.any(p < 0) or p.sum() <= 0:
        raise ValueError("counts must be a non-empty 1-D vector of non-negative numbers with a positive sum")
    proportions: npt.NDArray[np.float64] = p / p.sum()
    return proportions


def psi(expected: npt.ArrayLike, actual: npt.ArrayLike, eps: float = PSI_EPSILON) -> float:
    """Population stability index Σ (q−p)·ln(q/p) of two count vectors, proportions floored at `eps`."""
    p, q = np.maximum(_proportions(expected), eps), np.maximum(_proportions(actual), eps)
    return float(np.sum((q - p) * np.log(q / p)))


def js_distance(p_counts: npt.ArrayLike, q_counts: npt.ArrayLike) -> float:
    """Jensen–Shannon distance, base 2 (0 … 1); equals scipy.spatial.distance.jensenshannon(p, q, base=2)."""
    p, q = _proportions(p_counts), _proportions(q_counts)
    m = (p + q) / 2.0

    def kl_to_m(x: npt.NDArray[np.float64]) -> float:
        nz = x > 0
        return float(np.sum(x[nz] * np.log(x[nz] / m[nz])))

    divergence = (kl_to_m(p) + kl_to_m(q)) / (2.0 * math.log(2.0))
    return math.sqrt(max(divergence, 0.0))


def _samples(values: npt.ArrayLike) -> npt.NDArray[np.float64]:
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("a sample must not be empty")
    return np.sort(x)


def ks_statistic(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    """Two-sample Kolmogorov–Smirnov statistic sup |F_a − F_b| (scipy.stats.ks_2samp(a, b).statistic)."""
    x, y = _samples(a), _samples(b)
    both = np.concatenate([x, y])
    diff = np.searchsorted(x, both, side="right") / x.size - np.searchsorted(y, both, side="right") / y.size
    return float(np.max(np.abs(diff)))


def wasserstein(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    """1-D earth mover's distance ∫ |F_a − F_b| (scipy.stats.wasserstein_distance(a, b))."""
    x, y = _samples(a), _samples(b)
    both = np.sort(np.concatenate([x, y]), kind="mergesort")
    fx = np.searchsorted(x, both[:-1], side="right") / x.size
    fy = np.searchsorted(y, both[:-1], side="right") / y.size
    return float(np.sum(np.abs(fx - fy) * np.diff(both)))
