"""Parsing and printing of durations, rates and latencies ("10s", "250ms", "500/s")."""

from __future__ import annotations

import math
import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*(ns|us|µs|ms|s|m|h)?\s*$")
_SECONDS_PER_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*(/s|/m|rps)?\s*$")


class UnitError(ValueError):
    """A duration or rate that does not parse."""


def parse_duration(text: str | float | int, default_unit: str = "s") -> float:
    """'10s', '250ms', '1.5m', or a bare number in ``default_unit`` → seconds."""
    if isinstance(text, int | float):
        return float(text) * _SECONDS_PER_UNIT[default_unit]
    match = _DURATION.match(text)
    if not match:
        raise UnitError(f"not a duration: {text!r} (examples: 10s, 250ms, 2m)")
    return float(match.group(1)) * _SECONDS_PER_UNIT[match.group(2) or default_unit]


def parse_rate(text: str | float | int) -> float:
    """'500', '500/s', '500rps', '30000/m' → requests per second."""
    if isinstance(text, int | float):
        return float(text)
    match = _RATE.match(text)
    if not match:
        raise UnitError(f"not a rate: {text!r} (examples: 500, 500/s, 30000/m)")
    value = float(match.group(1))
    return value / 60.0 if match.group(2) == "/m" else value


def format_latency(ns: float) -> str:
    """Nanoseconds → the shortest readable unit: 850µs, 12.3ms, 1.20s."""
    if math.isnan(ns):
        return "-"
    if ns < 1e6:
        return f"{ns / 1e3:.0f}µs" if ns >= 1e4 else f"{ns / 1e3:.1f}µs"
    if ns < 1e9:
        return f"{ns / 1e6:.1f}ms" if ns >= 1e7 else f"{ns / 1e6:.2f}ms"
    return f"{ns / 1e9:.2f}s"


def format_rate(per_second: float) -> str:
    if math.isnan(per_second):
        return "-"
    return f"{per_second:,.0f}/s" if per_second >= 100 else f"{per_second:.1f}/s"


def format_duration(seconds: float) -> str:
    return f"{seconds:g}s"
