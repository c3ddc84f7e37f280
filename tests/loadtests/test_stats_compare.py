"""Verdict statistics: Wilson intervals, Mann-Whitney U (checked against scipy), the bootstrap, compare."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as scipy_stats

from loadtests.compare import Side, compare_sides, render_compare
from loadtests.histogram import LatencyHistogram
from loadtests.stats import bootstrap_ratio_ci, mann_whitney_u, wilson_interval, z_for


def test_z_and_wilson_against_known_values() -> None:
    assert z_for(0.95) == pytest.approx(1.959964, abs=1e-6)
    low, high = wilson_interval(50, 100)
    assert low == pytest.approx(0.40383, abs=1e-5) and high == pytest.approx(0.59617, abs=1e-5)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize("shift", [0.0, 0.3, 1.0])
def test_mann_whitney_matches_scipy_asymptotic(shift: float) -> None:
    rng = np.random.default_rng(3)
    a = rng.normal(10, 1, 25).round(1)  # rounding makes ties
    b = rng.normal(10 + shift, 1, 30).round(1)
    ours = mann_whitney_u(a, b)
    reference = scipy_stats.mannwhitneyu(
        b, a, alternative="two-sided", method="asymptotic", use_continuity=False
    )
    assert ours.u == pytest.approx(reference.statistic)
    assert ours.p_value == pytest.approx(reference.pvalue, rel=1e-9)


def test_mann_whitney_degenerate_inputs() -> None:
    assert mann_whitney_u([1.0], [2.0, 3.0]).p_value == 1.0
    assert mann_whitney_u([1.0, 1.0], [1.0, 1.0]).p_value == 1.0


def test_bootstrap_interval_covers_the_true_ratio() -> None:
    rng = np.random.default_rng(4)
    base, cand = rng.normal(10, 0.5, 30), rng.normal(12, 0.5, 30)
    ratio, low, high = bootstrap_ratio_ci(base, cand)
    assert low < 1.2 < high and ratio == pytest.approx(1.2, rel=0.05) and low > 1.0


def side(label: str, p50s: list[float], throughput: float = 1000.0) -> Side:
    rows = tuple(
        {"t": float(i), "ok": 1000, "p50_ms": v, "p99_ms": v * 3, "throughput": throughput + i % 3}
        for i, v in enumerate(p50s)
    )
    hist = LatencyHistogram()
    hist.record_many(int(v * 1e6) for v in p50s)
    return Side(label, rows, hist, 1.0)


def test_a_clearly_slower_candidate_is_called_slower() -> None:
    rng = np.random.default_rng(5)
    comparison = compare_sides(
        side("v1", list(rng.normal(5.0, 0.2, 12))), side("v2", list(rng.normal(6.0, 0.2, 12)))
    )
    assert comparison.regressed and comparison.line().startswith("SLOWER v2 vs v1: p50 +")
    faster = compare_sides(
        side("v2", list(rng.normal(6.0, 0.2, 12))), side("v1", list(rng.normal(5.0, 0.2, 12)))
    )
    assert not faster.regressed and faster.line().startswith("FASTER")


def test_noise_is_not_called_a_difference() -> None:
    rng = np.random.default_rng(6)
    comparison = compare_sides(
        side("a", list(rng.normal(5.0, 0.3, 12))), side("b", list(rng.normal(5.0, 0.3, 12)))
    )
    assert not comparison.main.significant and comparison.line().startswith("NO SIGNIFICANT DIFFERENCE")


def test_a_real_but_tiny_change_is_below_the_minimum_effect() -> None:
    base = [5.0 + 0.001 * i for i in range(20)]
    comparison = compare_sides(side("a", base), side("b", [v * 1.01 for v in base]), min_effect=0.03)
    assert comparison.main.p_value < 0.05 and not comparison.main.significant


def test_too_few_intervals_is_inconclusive_and_renders() -> None:
    comparison = compare_sides(side("a", [5.0]), side("b", [9.0]))
    assert comparison.line().startswith("INCONCLUSIVE") and not comparison.regressed
    html = render_compare(comparison.to_json())
    assert "<svg" in html and "INCONCLUSIVE" in html


def test_throughput_as_the_primary_metric() -> None:
    rng = np.random.default_rng(7)
    base = side("a", list(rng.normal(5.0, 0.2, 12)), throughput=1000)
    cand = side("b", list(rng.normal(5.0, 0.2, 12)), throughput=800)
    comparison = compare_sides(base, cand, primary="throughput")
    assert comparison.regressed and comparison.line().startswith("LOWER THROUGHPUT")
    with pytest.raises(ValueError):
        compare_sides(base, cand, primary="p42")
