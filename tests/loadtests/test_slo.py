"""SLO strings: parsing, judging, the one-line verdict, and clear errors for malformed ones."""

from __future__ import annotations

import pytest

from loadtests.histogram import LatencyHistogram
from loadtests.slo import Observed, SloSyntaxError, parse_slo


def observed(
    latencies_ms: list[float], errors: int = 0, throughput: float = 1000.0, batch: int = 1
) -> Observed:
    hist = LatencyHistogram()
    hist.record_many(int(ms * 1e6) for ms in latencies_ms)
    return Observed(hist, len(latencies_ms) + errors, errors, throughput, batch)


def test_the_issue_example_parses() -> None:
    slo = parse_slo("p99<25ms,errors<0.1%,throughput>=500/s")
    assert [(c.metric, c.op, c.limit) for c in slo.clauses] == [
        ("latency", "<", 25e6),
        ("error_rate", "<", 0.1),
        ("throughput", ">=", 500.0),
    ]
    assert slo.clauses[0].percentile == 99.0


@pytest.mark.parametrize(
    "text, metric, limit, percentile",
    [
        ("p99.9 <= 1s", "latency", 1e9, 99.9),
        ("p50<800us", "latency", 800e3, 50.0),
        ("max<2s", "latency", 2e9, 100.0),
        ("mean<10ms", "latency", 10e6, None),
        ("errors<=0", "errors", 0.0, None),
        ("throughput>30000/m", "throughput", 500.0, None),
        ("inferences>=2000", "inferences", 2000.0, None),
    ],
)
def test_clause_forms(text: str, metric: str, limit: float, percentile: float | None) -> None:
    (clause,) = parse_slo(text).clauses
    assert (clause.metric, clause.percentile) == (metric, percentile)
    assert clause.limit == pytest.approx(limit)


def test_a_met_slo_passes_with_a_one_line_verdict() -> None:
    verdict = parse_slo("p99<25ms,errors<0.1%,throughput>=500/s").evaluate(
        observed([5.0] * 1000, throughput=800)
    )
    assert verdict.passed
    line = verdict.line("digits")
    assert "\n" not in line and line.startswith("PASS digits:") and "p99 5.00ms < 25.0ms ✓" in line


def test_each_broken_clause_fails_and_is_named_first() -> None:
    data = [5.0] * 980 + [40.0] * 20
    verdict = parse_slo("throughput>=500/s,p99<25ms,errors<0.1%").evaluate(
        observed(data, errors=2, throughput=400)
    )
    assert not verdict.passed
    assert [r.held for r in verdict.results] == [False, False, False]
    line = verdict.line()
    assert line.startswith("FAIL: ") and line.count("✗") == 3


def test_error_count_and_inferences() -> None:
    assert not parse_slo("errors<=0").evaluate(observed([1.0], errors=1)).passed
    assert parse_slo("inferences>=3000/s").evaluate(observed([1.0], throughput=1000, batch=4)).passed


def test_no_successful_reply_fails_a_latency_clause() -> None:
    assert not parse_slo("p99<25ms").evaluate(observed([], errors=5)).passed


@pytest.mark.parametrize(
    "text, says",
    [
        ("", "empty SLO clause"),
        ("p99<25ms,", "empty SLO clause"),
        ("p99<25", "needs a unit"),
        ("p99=25ms", "expected METRIC OP VALUE"),
        ("latency<25ms", "unknown metric 'latency'"),
        ("p99<fast", "not a duration"),
        ("errors<lots%", "not a number"),
        ("throughput>=many", "not a rate"),
        ("p0<1ms", "percentile must be within"),
    ],
)
def test_malformed_slos_say_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(SloSyntaxError, match=says):
        parse_slo(text)
