"""The core's events into /metrics, ModelStatistics and drift: one `VersionObserver` per model version.

`Telemetry` (a ServingMetrics and a DriftEngine, both optional, built by the server) gives every
model version its observer. The observer reads only the facts of `ObservedVersion` (a Protocol that
serving.lifecycle.version.ModelVersion satisfies): telemetry imports lifecycle's state names
(serving/lifecycle/state.py), never its classes. The observer is the version's `BatchObserver` and its
request hook, so the Triton statistics (VersionStats, served by the ModelStatistics RPC and read by
perf_analyzer) and the Prometheus series are moved by the same events and agree by construction:

    batcher: batch ran        on_batch           VersionStats.batch_executed, ServingMetrics.batch_executed
    batcher: request dropped  on_rejected        serving_requests_rejected_total
    ModelVersion.infer: ok    request_succeeded  VersionStats.request_succeeded, stage="queue" histogram,
                                                 DriftEngine.submit (a deque append per request)
    ModelVersion.infer: error request_failed     VersionStats.request_failed
    load begins               started            drift monitors (a bad `drift.*` key fails the load),
                                                 scrape-time state / queue depth / in-flight gauges
    READY                     loaded             serving_model_load_duration_seconds
    FAILED / UNLOADED         failed / unloaded  drift monitors dropped; an unloaded version's series
                                                 are forgotten `forget_after_s` later

Version state, queue depth and in-flight are read from the version when Prometheus scrapes, so they
cost nothing per request. A hot swap loads a new `ModelVersion` under the same (model, version) labels
while the old one still serves: the labels follow the newest live version (`Telemetry.claim`), and they
are released (drift dropped, series forgotten) only when no live version holds them any more
(`Telemetry.release`, then `Telemetry.forget_later`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

from serving.backends.base import ComputeTimings
from serving.batching.batcher import RequestResult
from serving.drift.engine import DriftEngine
from serving.lifecycle.state import VersionState
from serving.telemetry.metrics import ServingMetrics
from serving.telemetry.statistics import VersionStats

log = logging.getLogger("serving.observability")

DEFAULT_FORGET_AFTER_S = 300.0  # long enough for several scrapes to see UNLOADED

VersionKey = tuple[str, str]
# call_later(delay_s, callback): when to forget an unloaded version's series (tests pass their own).
CallLater = Callable[[float, Callable[[], None]], object]


class ObservedVersion(Protocol):
    """What the observer reads of a model version."""

    @property
    def name(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def state(self) -> VersionState: ...
    @property
    def stats(self) -> VersionStats: ...
    @property
    def queue_depth(self) -> int: ...
    @property
    def in_flight(self) -> int: ...
    @property
    def healthy(self) -> bool: ...
    @property
    def queue_capacity(self) -> int:
        """The batcher's max queue size; 0 = unbounded."""
        ...

    @property
    def parameters(self) -> Mapping[str, str]:
        """config.pbtxt's `parameters` (drift reads its `drift.*` keys)."""
        ...

    @property
    def folder(self) -> Path:
        """The version's folder (drift reads its reference.json)."""
        ...


def _call_later_on_loop(delay_s: float, callback: Callable[[], None]) -> object:
    return asyncio.get_running_loop().call_later(delay_s, callback)


class Telemetry:
    """What versions report to; `Telemetry()` (no metrics, no drift) keeps only VersionStats."""

    def __init__(
        self,
        metrics: ServingMetrics | None = None,
        drift: DriftEngine | None = None,
        *,
        forget_after_s: float = DEFAULT_FORGET_AFTER_S,
        call_later: CallLater = _call_later_on_loop,
    ) -> None:
        self.metrics = metrics
        self.drift = drift
        self.forget_after_s = forget_after_s
        self._call_later = call_later
        # (model, version) → its share of the model's routed requests; set once routing exists (the
        # registry, built with this Telemetry, comes first). Read at scrape time only.
        self.traffic_share: Callable[[str, int], float] | None = None
        self._live: dict[VersionKey, list[VersionObserver]] = {}  # started, not yet failed or unloaded

    def observer_for(self, version: ObservedVersion) -> VersionObserver:
        return VersionObserver(version, self)

    def claim(self, observer: VersionObserver) -> None:
        """`observer`'s version is live (loading or serving): its labels now follow it."""
        self._live.setdefault(observer.key, []).append(observer)

    def release(self, observer: VersionObserver) -> VersionObserver | None:
        """Drop `observer`; returns the live observer that now holds its labels, None if none does."""
        live = self._live.get(observer.key, [])
        if observer in live:
            live.remove(observer)
        if live:
            return live[-1]
        self._live.pop(observer.key, None)
        return None

    def forget_later(self, key: VersionKey) -> None:
        """Forget `key`'s series `forget_after_s` from now, unless a version has claimed them again."""
        self._call_later(self.forget_after_s, lambda: self._forget_if_released(key))

    def _forget_if_released(self, key: VersionKey) -> None:
        if key not in self._live and self.metrics is not None:
            self.metrics.forget_version(*key)


class VersionObserver:
    """One version's hooks: BatchObserver for its batcher, request and lifecycle hooks for ModelVersion.

    Called on the event loop; never raises on the request path."""

    def __init__(self, version: ObservedVersion, telemetry: Telemetry) -> None:
        self._version = version
        self._telemetry = telemetry
        self._metrics = telemetry.metrics
        self._drift = telemetry.drift
        self.key: VersionKey = (version.name, str(version.version))

    # ---- BatchObserver --------------------------------------------------------------------------

    def on_batch(
        self, rows: int, requests: int, timings: ComputeTimings | None, error: BaseException | None
    ) -> None:
        if timings is not None and error is None:
            self._version.stats.batch_executed(rows, timings)
        if self._metrics is not None:
            self._metrics.batch_executed(*self.key, rows, timings, failed=error is not None)

    def on_rejected(self, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.request_rejected(*self.key, reason)

    # ---- requests (ModelVersion.infer) -----------------------------------------------------------

    def request_succeeded(self, total_ns: int, result: RequestResult) -> None:
        self._version.stats.request_succeeded(total_ns, result.queue_ns, result.timings)
        if self._metrics is not None:
            self._metrics.request_queued_for(*self.key, result.queue_ns / 1e9)
        if self._drift is not None:
            self._drift.submit(*self.key, result.outputs)

    def request_failed(self, total_ns: int) -> None:
        self._version.stats.request_failed(total_ns)

    # ---- lifecycle (ModelVersion.load / drain_and_unload) ---------------------------------------

    def started(self) -> None:
        """Load begins: these labels now follow this version (scrape-time gauges), and its drift
        monitoring starts (ModelConfigError for bad `drift.*` keys, which fails the load)."""
        self._telemetry.claim(self)
        self._watch()
        if self._drift is not None:
            self._drift.add_version(*self.key, self._version.parameters, self._version.folder)

    def loaded(self, seconds: float) -> None:
        if self._metrics is not None:
            self._metrics.model_loaded(*self.key, seconds)

    def failed(self) -> None:
        """Keep the FAILED state visible, unless an older version still serves under these labels."""
        holder = self._telemetry.release(self)
        if holder is not None:
            holder._watch()
        elif self._drift is not None:
            self._drift.remove_version(*self.key)

    def unloaded(self) -> None:
        holder = self._telemetry.release(self)
        if holder is not None:
            return
        if self._drift is not None:
            self._drift.remove_version(*self.key)
        if self._metrics is not None:
            self._telemetry.forget_later(self.key)

    def _watch(self) -> None:
        if self._metrics is None:
            return
        version = self._version
        share = self._telemetry.traffic_share
        self._metrics.watch_version(
            *self.key,
            state=lambda: version.state.value,
            queue_depth=lambda: version.queue_depth,
            in_flight=lambda: version.queue_depth + version.in_flight,
            queue_capacity=version.queue_capacity,
            traffic_weight=(lambda: share(version.name, version.version)) if share is not None else None,
            healthy=lambda: version.healthy,
        )
