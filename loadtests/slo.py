"""SLO gates: ``"p99<25ms,errors<0.1%,throughput>=500/s"`` → a pass/fail verdict with one line.

Grammar: clauses separated by commas, each ``METRIC OP VALUE``.

    METRIC  p50 p90 p99 p99.9 (any pNN[.N]), mean, max  latency; VALUE needs a unit: ns us ms s
            errors       VALUE with % is the error rate, a bare number is the error count
            throughput   successful requests per second; VALUE like 500, 500/s, 30000/m
            inferences   throughput × batch size (samples per second)
    OP      <  <=  >  >=
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass

from loadtests.histogram import LatencyHistogram
from loadtests.units import UnitError, format_latency, format_rate, parse_duration, parse_rate

_CLAUSE = re.compile(r"^\s*([A-Za-z]+[0-9.]*)\s*(<=|>=|<|>)\s*(\S.*?)\s*$")
_PERCENTILE = re.compile(r"^p(\d{1,2}(?:\.\d+)?)$")
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


class SloSyntaxError(ValueError):
    """A malformed SLO string; the message names the clause and says what was expected."""


@dataclass(frozen=True)
class Observed:
    """What an SLO is judged on: one target's (or a whole run's) totals."""

    histogram: LatencyHistogram
    requests: int
    errors: int
    throughput: float
    batch: int = 1


@dataclass(frozen=True)
class Clause:
    text: str
    metric: str  # "latency", "errors", "error_rate", "throughput", "inferences"
    op: str
    limit: float  # ns for latency, % for error_rate, count, or per second
    percentile: float | None = None  # for latency: 0..100; None means mean

    def measure(self, observed: Observed) -> float:
        if self.metric == "latency":
            if self.percentile is None:
                return observed.histogram.mean
            return observed.histogram.percentile(self.percentile)
        if self.metric == "errors":
            return float(observed.errors)
        if self.metric == "error_rate":
            return 100.0 * observed.errors / observed.requests if observed.requests else math.nan
        if self.metric == "throughput":
            return observed.throughput
        return observed.throughput * observed.batch

    def format_value(self, value: float) -> str:
        if self.metric == "latency":
            return format_latency(value)
        if self.metric == "error_rate":
            return "-" if math.isnan(value) else f"{value:.3g}%"
        if self.metric == "errors":
            return f"{value:.0f}"
        return format_rate(value)

    def evaluate(self, observed: Observed) -> ClauseResult:
        value = self.measure(observed)
        held = not math.isnan(value) and _OPS[self.op](value, self.limit)
        name = self.text.split(self.op, 1)[0].strip()
        line = f"{name} {self.format_value(value)} {self.op} {self.format_value(self.limit)}"
        return ClauseResult(self, value, held, line)


@dataclass(frozen=True)
class ClauseResult:
    clause: Clause
    value: float
    held: bool
    line: str


@dataclass(frozen=True)
class SloVerdict:
    passed: bool
    results: tuple[ClauseResult, ...]

    def line(self, label: str = "") -> str:
        """One line: 'PASS digits: p99 12.1ms < 25.0ms ✓, ...' (failed clauses first)."""
        ordered = sorted(self.results, key=lambda r: r.held)
        parts = ", ".join(f"{r.line} {'✓' if r.held else '✗'}" for r in ordered)
        head = "PASS" if self.passed else "FAIL"
        return f"{head} {label}: {parts}" if label else f"{head}: {parts}"


@dataclass(frozen=True)
class Slo:
    text: str
    clauses: tuple[Clause, ...]

    def evaluate(self, observed: Observed) -> SloVerdict:
        results = tuple(clause.evaluate(observed) for clause in self.clauses)
        return SloVerdict(all(r.held for r in results), results)


def parse_slo(text: str) -> Slo:
    """Parse an SLO string, or raise SloSyntaxError naming the bad clause."""
    parts = [part for part in text.split(",")]
    if not text.strip() or any(not part.strip() for part in parts):
        raise SloSyntaxError(f"empty SLO clause in {text!r}; expected e.g. 'p99<25ms,errors<0.1%'")
    return Slo(text, tuple(_parse_clause(part.strip()) for part in parts))


def _parse_clause(text: str) -> Clause:
    match = _CLAUSE.match(text)
    if not match:
        raise SloSyntaxError(
            f"bad SLO clause {text!r}: expected METRIC OP VALUE, e.g. p99<25ms (OP is < <= > >=)"
        )
    name, op, value = match.group(1).lower(), match.group(2), match.group(3)
    try:
        return _build_clause(text, name, op, value)
    except UnitError as err:
        raise SloSyntaxError(f"bad SLO clause {text!r}: {err}") from None


def _build_clause(text: str, name: str, op: str, value: str) -> Clause:
    if _PERCENTILE.match(name) or name in ("max", "mean"):
        return _latency_clause(text, name, op, value)
    if name == "errors":
        if value.endswith("%"):
            return Clause(text, "error_rate", op, _number(text, value[:-1]))
        return Clause(text, "errors", op, _number(text, value))
    if name in ("throughput", "inferences"):
        return Clause(text, name, op, parse_rate(value))
    raise SloSyntaxError(
        f"bad SLO clause {text!r}: unknown metric {name!r}; "
        "use pNN, mean, max, errors, throughput or inferences"
    )


def _latency_clause(text: str, name: str, op: str, value: str) -> Clause:
    if not re.search(r"[a-zµ]\s*$", value):
        raise SloSyntaxError(f"bad SLO clause {text!r}: a latency needs a unit (ns, us, ms, s), e.g. 25ms")
    limit_ns = parse_duration(value) * 1e9
    if name == "mean":
        return Clause(text, "latency", op, limit_ns, None)
    p = 100.0 if name == "max" else float(name[1:])
    if not 0.0 < p <= 100.0:
        raise SloSyntaxError(f"bad SLO clause {text!r}: percentile must be within (0, 100]")
    return Clause(text, "latency", op, limit_ns, p)


def _number(text: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise SloSyntaxError(f"bad SLO clause {text!r}: {value!r} is not a number") from None
