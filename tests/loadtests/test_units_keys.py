"""Durations, rates, routing-key distributions."""

from __future__ import annotations

import numpy as np
import pytest

from loadtests.keys import KeySampler, KeySpecError, parse_keys
from loadtests.units import UnitError, format_latency, parse_duration, parse_rate


def test_durations_and_rates() -> None:
    assert parse_duration("10s") == 10.0
    assert parse_duration("250ms") == pytest.approx(0.25)
    assert parse_duration("1.5m") == 90.0
    assert parse_duration("7") == 7.0
    assert parse_rate("500/s") == 500.0 and parse_rate("30000/m") == 500.0 and parse_rate(12) == 12.0
    with pytest.raises(UnitError):
        parse_duration("ten seconds")
    assert format_latency(850_000) == "850µs" and format_latency(12_345_678) == "12.3ms"


def test_key_specs() -> None:
    zipf = parse_keys("zipf:10000:1.1")
    assert (zipf.kind, zipf.n, zipf.exponent, zipf.text) == ("zipf", 10000, 1.1, "zipf:10000:1.1")
    assert parse_keys("uniform:5").key(0) == "user-1"
    for bad in ("zipf:100", "zipf:100:0", "uniform:10:2", "pareto:10", "zipf:0:1.1"):
        with pytest.raises(KeySpecError):
            parse_keys(bad)


def test_zipf_draws_follow_the_distribution() -> None:
    distribution = parse_keys("zipf:1000:1.1")
    sampler = KeySampler(distribution, seed=1)
    draws = np.array([sampler.next() for _ in range(200_000)])
    observed = np.bincount(draws, minlength=1000) / len(draws)
    expected = distribution.probabilities()
    assert draws.min() >= 0 and draws.max() < 1000
    assert np.abs(observed[:10] - expected[:10]).max() < 0.005  # the hot keys
    assert observed[0] / observed[9] == pytest.approx(10**1.1, rel=0.1)


def test_uniform_draws_cover_every_key() -> None:
    sampler = KeySampler(parse_keys("uniform:50"), seed=2)
    counts = np.bincount([sampler.next() for _ in range(50_000)], minlength=50)
    assert counts.min() > 800 and counts.max() < 1200


def test_same_seed_same_keys() -> None:
    a, b = KeySampler(parse_keys("zipf:100:1.2"), 7), KeySampler(parse_keys("zipf:100:1.2"), 7)
    assert [a.next() for _ in range(100)] == [b.next() for _ in range(100)]
