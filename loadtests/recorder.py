"""What a worker records per request, and the messages it sends to the parent process.

Time is ``time.monotonic()`` (CLOCK_MONOTONIC: one clock for every process on the machine). Zero is
the start of measurement; requests whose intended send time falls in the warm-up (before zero) are
not recorded. A request belongs to the interval of its *intended* send time (latency, errors,
versions); its completion counts toward the interval it completes in (throughput).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from loadtests.histogram import LatencyHistogram

SIGNIFICANT_DIGITS = 3


@dataclass
class IntervalStats:
    latency: LatencyHistogram = field(default_factory=lambda: LatencyHistogram(SIGNIFICANT_DIGITS))
    errors: dict[str, int] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    completed: int = 0  # successful replies that completed in this interval

    @property
    def ok(self) -> int:
        return self.latency.count

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    @property
    def requests(self) -> int:
        return self.ok + self.failed

    def merge(self, other: IntervalStats) -> None:
        self.latency.merge(other.latency)
        for code, n in other.errors.items():
            self.errors[code] = self.errors.get(code, 0) + n
        for version, n in other.versions.items():
            self.versions[version] = self.versions.get(version, 0) + n
        self.completed += other.completed


@dataclass(frozen=True)
class WorkerReady:
    worker: int


@dataclass(frozen=True)
class WorkerFailed:
    worker: int
    error: str


@dataclass(frozen=True)
class IntervalDeltas:
    """What changed since the last flush: (target, interval index) → stats to add."""

    worker: int
    deltas: dict[tuple[int, int], IntervalStats]


@dataclass
class TargetTotals:
    """Per target, what is only needed at the end."""

    lag: LatencyHistogram = field(default_factory=lambda: LatencyHistogram(SIGNIFICANT_DIGITS))
    key_versions: dict[int, set[str]] = field(default_factory=dict)
    last_completion_s: float = 0.0  # relative to zero


@dataclass(frozen=True)
class WorkerFinished:
    worker: int
    totals: tuple[TargetTotals, ...]
    cpu_s: float
    wall_s: float


class Recorder:
    """Accumulates one worker's measurements; ``take_deltas`` hands over what is new."""

    def __init__(self, targets: int, zero: float, interval_s: float, track_keys: tuple[bool, ...]) -> None:
        self.zero = zero
        self._interval = interval_s
        self._deltas: dict[tuple[int, int], IntervalStats] = {}
        self.totals = tuple(TargetTotals() for _ in range(targets))
        self._track_keys = track_keys

    def _slot(self, target: int, at: float) -> IntervalStats:
        key = (target, int((at - self.zero) // self._interval))
        stats = self._deltas.get(key)
        if stats is None:
            stats = self._deltas[key] = IntervalStats()
        return stats

    def ok(self, target: int, intended: float, done: float, version: str, key: int | None) -> None:
        if intended < self.zero:
            return
        stats = self._slot(target, intended)
        stats.latency.record(int((done - intended) * 1e9))
        stats.versions[version] = stats.versions.get(version, 0) + 1
        self._slot(target, done).completed += 1
        totals = self.totals[target]
        since_zero = done - self.zero
        if since_zero > totals.last_completion_s:
            totals.last_completion_s = since_zero
        if key is not None and self._track_keys[target]:
            seen = totals.key_versions.get(key)
            if seen is None:
                totals.key_versions[key] = {version}
            else:
                seen.add(version)

    def error(self, target: int, intended: float, code: str) -> None:
        if intended < self.zero:
            return
        errors = self._slot(target, intended).errors
        errors[code] = errors.get(code, 0) + 1

    def lag(self, target: int, intended: float, sent: float) -> None:
        if intended >= self.zero:
            self.totals[target].lag.record(int((sent - intended) * 1e9))

    def take_deltas(self) -> dict[tuple[int, int], IntervalStats]:
        deltas, self._deltas = self._deltas, {}
        return deltas
