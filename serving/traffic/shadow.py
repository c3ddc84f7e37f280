"""Shadow copies: a sampled request also goes to a candidate version, off the request path.

The data plane answers the client with the primary's outputs first, then hands the request and those
outputs to `ShadowRunner.submit`, which only schedules a background task and returns. The task runs the
request on the shadow version, compares the answers (`routing.ShadowComparison`) and records agreement
and latency per (model, primary, shadow) version pair. A shadow can therefore never delay or fail a
client's response:
  * bounded: with `max_outstanding` shadow tasks running, further copies are dropped (and counted);
  * every exception of the shadow path is swallowed and counted as `failed`;
  * each shadow request has its own deadline (`timeout_s`), so a stuck shadow ends.

Agreement of one comparison = the mean over outputs of argmax agreement (2-D float outputs) or exact
match (integer, bool, BYTES), an output missing on one side or with another shape counting 0; other
float outputs are summarised by their mean absolute difference instead.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from serving.core.request import InferenceRequest
from serving.telemetry.metrics import LATENCY_BUCKETS
from serving.traffic.policy import ShadowComparison
from serving.types import Array

log = logging.getLogger("serving.shadow")

LATENCY_WINDOW = 1024  # latencies kept per pair for the percentiles


class ShadowTarget(Protocol):
    """The shadow version (serving.lifecycle.version.ModelVersion)."""

    @property
    def version(self) -> int: ...

    async def infer(
        self, request: InferenceRequest, deadline: float | None, timeout_s: float | None
    ) -> dict[str, Array]: ...


class ShadowObserver(Protocol):
    """Metrics hook (serving.telemetry.metrics.ServingMetrics has this method)."""

    def shadow_compared(
        self, model: str, primary: str, shadow: str, agreement: float, seconds: float
    ) -> None: ...


@dataclass(frozen=True)
class ShadowPairSnapshot:
    model: str
    primary: int
    shadow: int
    compared: int
    agreement: float  # NaN: nothing measurable by agreement
    mean_abs_diff: float  # NaN: no output measured by difference
    mismatched: int
    failed: int
    dropped: int
    latency_mean_s: float
    latency_p50_s: float
    latency_p99_s: float
    latency_max_s: float
    agreement_sum: float = 0.0  # over `agreement_count` comparisons (the rollout judge's interval)
    agreement_count: int = 0
    latency_buckets: tuple[int, ...] = ()  # per-bucket counts over LATENCY_BUCKETS, then the overflow


@dataclass
class _PairStats:
    compared: int = 0
    agreement_sum: float = 0.0
    agreement_count: int = 0
    diff_sum: float = 0.0
    diff_count: int = 0
    mismatched: int = 0
    failed: int = 0
    dropped: int = 0
    latency_sum: float = 0.0
    latency_max: float = 0.0
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))

    def record(self, comparison: ShadowComparison, seconds: float) -> float | None:
        self.compared += 1
        self.buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds
        self.latency_max = max(self.latency_max, seconds)
        self.recent.append(seconds)
        if comparison.mismatched:
            self.mismatched += 1
        for diff in comparison.mean_abs_diff.values():
            self.diff_sum += diff
            self.diff_count += 1
        agreement = comparison_agreement(comparison)
        if agreement is not None:
            self.agreement_sum += agreement
            self.agreement_count += 1
        return agreement

    def snapshot(self, model: str, primary: int, shadow: int) -> ShadowPairSnapshot:
        recent = np.asarray(self.recent, dtype=np.float64)
        p50, p99 = (float(q) for q in np.quantile(recent, [0.5, 0.99])) if recent.size else (0.0, 0.0)
        return ShadowPairSnapshot(
            model=model,
            primary=primary,
            shadow=shadow,
            compared=self.compared,
            agreement=self.agreement_sum / self.agreement_count if self.agreement_count else math.nan,
            mean_abs_diff=self.diff_sum / self.diff_count if self.diff_count else math.nan,
            mismatched=self.mismatched,
            failed=self.failed,
            dropped=self.dropped,
            latency_mean_s=self.latency_sum / self.compared if self.compared else 0.0,
            latency_p50_s=p50,
            latency_p99_s=p99,
            latency_max_s=self.latency_max,
            agreement_sum=self.agreement_sum,
            agreement_count=self.agreement_count,
            latency_buckets=tuple(self.buckets),
        )


@dataclass(frozen=True)
class _ShadowCopy:
    """One request to copy to a shadow version, with the primary's answer to compare against."""

    model: str
    primary: int
    target: ShadowTarget
    request: InferenceRequest
    primary_outputs: dict[str, Array]


def comparison_agreement(comparison: ShadowComparison) -> float | None:
    """One comparison's agreement in [0, 1]; None when no output is measured by agreement."""
    values = [*comparison.argmax_agreement.values(), *comparison.exact_match.values()]
    values += [0.0] * len(comparison.mismatched)
    return sum(values) / len(values) if values else None


class ShadowRunner:
    """Runs shadow copies as bounded background tasks and keeps their statistics per version pair."""

    def __init__(
        self,
        *,
        max_outstanding: int = 64,
        timeout_s: float = 30.0,
        observer: ShadowObserver | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if max_outstanding < 1:
            raise ValueError(f"max_outstanding must be >= 1, got {max_outstanding}")
        self._max_outstanding = max_outstanding
        self._timeout_s = timeout_s
        self._observer = observer
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()
        self._pairs: dict[tuple[str, int, int], _PairStats] = {}

    def submit(
        self,
        model: str,
        primary: int,
        target: ShadowTarget,
        request: InferenceRequest,
        primary_outputs: dict[str, Array],
    ) -> bool:
        """Schedule a shadow copy of `request`; False (counted as dropped) when too many are running."""
        stats = self._pair(model, primary, target.version)
        if len(self._tasks) >= self._max_outstanding:
            stats.dropped += 1
            return False
        task = asyncio.create_task(
            self._run(stats, _ShadowCopy(model, primary, target, request, primary_outputs)),
            name=f"shadow-{model}-v{target.version}",
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _run(self, stats: _PairStats, copy: _ShadowCopy) -> None:
        target = copy.target
        started = self._clock()
        try:
            deadline = time.monotonic() + self._timeout_s
            outputs = await target.infer(copy.request, deadline=deadline, timeout_s=None)
            seconds = self._clock() - started
            agreement = stats.record(ShadowComparison.compare(copy.primary_outputs, outputs), seconds)
            if self._observer is not None and agreement is not None:
                primary, shadow = str(copy.primary), str(target.version)
                self._observer.shadow_compared(copy.model, primary, shadow, agreement, seconds)
        except asyncio.CancelledError:
            stats.failed += 1
            raise
        except Exception as exc:  # a shadow's failure is recorded, never propagated
            stats.failed += 1
            log.debug("shadow %s v%d (primary v%d) failed: %s", copy.model, target.version, copy.primary, exc)

    def _pair(self, model: str, primary: int, shadow: int) -> _PairStats:
        return self._pairs.setdefault((model, primary, shadow), _PairStats())

    def stats(self, model: str) -> list[ShadowPairSnapshot]:
        """Every (primary, shadow) pair of `model` seen so far, ordered by version numbers."""
        return [
            stats.snapshot(m, primary, shadow)
            for (m, primary, shadow), stats in sorted(self._pairs.items(), key=lambda item: item[0])
            if m == model
        ]

    def forget(self, model: str) -> None:
        for key in [k for k in self._pairs if k[0] == model]:
            del self._pairs[key]

    async def close(self, timeout_s: float = 5.0) -> None:
        """Let running shadow copies finish for up to `timeout_s`, then cancel the rest."""
        tasks = list(self._tasks)
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks, timeout=timeout_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
