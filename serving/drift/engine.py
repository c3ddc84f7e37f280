"""Prediction drift of every loaded version: `DriftEngine` owns the monitors and scores them.

On the request path `DriftEngine.submit` only appends (model, version, outputs) to a bounded queue (one
deque append; a full queue drops the request and counts it in serving_drift_dropped_total, it never
blocks). The engine's daemon thread drains the queue every `FLUSH_S` (and before every scoring pass and
scrape): consecutive requests' outputs are concatenated and summarised at once by each output's
`PredictionMonitor` (serving.drift.monitor), started on the output's first batch. `observe` summarises
synchronously (tests, tools). Every `interval_s` the thread scores the live windows against their
references and sets the gauges.

The parts, one job each: serving.drift.statistics (the statistics: `psi`, `js_distance` and `confidence_psi`
for classification; `ks`, `wasserstein` for numeric outputs), serving.drift.config (the `drift.*`
config.pbtxt parameters), serving.drift.reference (reference distributions and reference.json),
serving.drift.monitor (one output's window and score). docs/metrics.md has the formulas.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from serving.drift.config import DriftConfig, OutputSpec
from serving.drift.monitor import Clock, PredictionMonitor
from serving.drift.reference import REFERENCE_FILE, Reference, load_references
from serving.errors import ModelConfigError
from serving.telemetry.metrics import ServingMetrics
from serving.telemetry.predictions import PredictionCounts
from serving.types import Array

FLUSH_S = 0.05  # how often the engine's thread summarises what was submitted
MAX_PENDING = 8192  # submitted requests waiting to be summarised; more are dropped and counted
MAX_GROUP = 64  # requests summarised together at most (the window's buckets stay close to their size)

log = logging.getLogger(__name__)


def _check_kind(config: DriftConfig, output: str, reference: Reference) -> None:
    if output in config.outputs:
        spec = config.outputs[output]
        if spec is None or spec.kind != reference.kind:
            configured = spec.kind if spec is not None else "off"
            raise ValueError(f"a {reference.kind} reference for output {output!r}, configured {configured}")


@dataclass
class _Version:
    config: DriftConfig
    references: dict[str, Reference]  # for outputs whose monitor starts with the first batch
    monitors: dict[str, PredictionMonitor] = field(default_factory=dict)
    skipped: set[str] = field(default_factory=set)  # outputs off, unmonitorable, or failing


class DriftEngine:
    """Monitors of every loaded version; scores them every `interval_s` on a daemon thread.

    Also the `PredictionSource` of `metrics`: prediction distributions are read at scrape time."""

    def __init__(
        self,
        metrics: ServingMetrics,
        interval_s: float = 10.0,
        *,
        clock: Clock = time.monotonic,
        seed: int = 0,
        max_pending: int = MAX_PENDING,
    ) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self._metrics, self._interval_s, self._clock, self._seed = metrics, interval_s, clock, seed
        self._pending: deque[tuple[str, str, Mapping[str, Array]]] = deque()
        self._max_pending = max_pending
        self._flush_lock = threading.Lock()  # one thread summarises the queue at a time
        self._lock = threading.Lock()  # guards _versions and their monitor maps
        self._export_lock = threading.Lock()  # serialises compute passes with remove_version
        self._versions: dict[tuple[str, str], _Version] = {}
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        metrics.watch_predictions(self)

    def add_version(
        self, model: str, version: str, parameters: Mapping[str, str], version_dir: Path | None
    ) -> None:
        """Read the `drift.*` parameters and the version folder's reference.json; ModelConfigError."""
        config = DriftConfig.from_parameters(parameters)
        file = version_dir / REFERENCE_FILE if version_dir is not None else None
        references = load_references(file) if file is not None and file.is_file() else {}
        for output, reference in references.items():
            try:
                _check_kind(config, output, reference)
            except ValueError as exc:
                raise ModelConfigError(f"{file}: {exc}") from exc
        with self._lock:
            self._versions[(model, version)] = _Version(config, references)

    def remove_version(self, model: str, version: str) -> None:
        """Drop the version's monitors and drift series (call before `ServingMetrics.forget_version`)."""
        with self._export_lock, self._lock:
            state = self._versions.pop((model, version), None)
        for output in state.monitors if state is not None else ():
            self._metrics.forget_drift_output(model, version, output)

    def submit(self, model: str, version: str, outputs: Mapping[str, Array]) -> None:
        """Queue one request's outputs for the engine's thread (event loop: O(1), never blocks)."""
        if len(self._pending) >= self._max_pending:
            self._metrics.drift_dropped(model, version)
            return
        self._pending.append((model, version, outputs))

    def flush(self) -> None:
        """Summarise what was submitted so far: each run of one version's requests at once per output."""
        with self._flush_lock:
            pending, left = self._pending, len(self._pending)
            while left > 0:
                model, version, first = pending.popleft()
                left -= 1
                arrays: dict[str, list[Array]] = {name: [array] for name, array in first.items()}
                grouped = 1
                while left > 0 and grouped < MAX_GROUP and pending[0][:2] == (model, version):
                    for name, array in pending.popleft()[2].items():
                        arrays.setdefault(name, []).append(array)
                    left, grouped = left - 1, grouped + 1
                for name, parts in arrays.items():
                    self._observe_parts(model, version, name, parts)

    def _observe_parts(self, model: str, version: str, output: str, parts: list[Array]) -> None:
        if len(parts) > 1:
            try:
                joined = np.concatenate(parts, axis=0)
            except ValueError:  # shapes differ: each alone, so the monitor judges each as it would
                pass
            else:
                self._observe_output(model, version, output, joined, len(parts))
                return
        for part in parts:
            self._observe_output(model, version, output, part, 1)

    def observe(self, model: str, version: str, outputs: Mapping[str, Array]) -> None:
        """Count one request's outputs now; never raises (a failing output is logged once and skipped)."""
        for output, array in outputs.items():
            self._observe_output(model, version, output, array, 1)

    def _observe_output(self, model: str, version: str, output: str, array: Array, requests: int) -> None:
        state = self._versions.get((model, version))
        if state is None or output in state.skipped:
            return
        try:
            monitor = state.monitors.get(output) or self._start_monitor(
                (model, version, output), state, array
            )
            if monitor is not None:
                monitor.observe(array, requests)
        except (ValueError, TypeError) as exc:
            log.warning("drift monitoring of %s/%s output %s stopped: %s", model, version, output, exc)
            state.skipped.add(output)

    def _start_monitor(
        self, labels: tuple[str, str, str], state: _Version, first: Array
    ) -> PredictionMonitor | None:
        with self._lock:
            if labels[2] in state.monitors:
                return state.monitors[labels[2]]
            reference = state.references.get(labels[2])
            spec = state.config.spec_for(labels[2], first)
            if reference is not None and labels[2] not in state.config.outputs:
                spec = OutputSpec(reference.kind)  # a reference decides over `drift.auto` and inference
            if spec is None:
                state.skipped.add(labels[2])
                return None
            width = (
                len(reference.class_counts)
                if reference is not None
                else (first.shape[-1] if first.ndim else 0)
            )
            monitor = PredictionMonitor(
                labels,
                spec,
                state.config,
                n_classes=width,
                clock=self._clock,
                reference=reference,
                seed=self._seed,
            )
            state.monitors[labels[2]] = monitor
            return monitor

    def monitor(self, model: str, version: str, output: str) -> PredictionMonitor | None:
        """The output's monitor, None until its first batch has been observed (submitted ones included)."""
        self.flush()
        state = self._versions.get((model, version))
        return state.monitors.get(output) if state is not None else None

    def set_reference(self, model: str, version: str, output: str, reference: Reference) -> None:
        """Use `reference` from now on (before the first batch too); KeyError for a version not added,
        ValueError for a reference that does not fit the output."""
        with self._lock:
            state = self._versions[(model, version)]
            _check_kind(state.config, output, reference)
            monitor = state.monitors.get(output)
            if monitor is not None:
                monitor.set_reference(reference)  # ValueError: wrong kind or class count
            state.references[output] = reference

    def reset_reference(self, model: str, version: str, output: str) -> None:
        """Forget the reference, capture a new one from the next predictions; KeyError: version not added."""
        with self._lock:
            state = self._versions[(model, version)]
            state.references.pop(output, None)
            monitor = state.monitors.get(output)
        if monitor is not None:
            monitor.reset_reference()

    def _monitors(self) -> list[PredictionMonitor]:
        with self._lock:
            return [m for state in self._versions.values() for m in list(state.monitors.values())]

    def compute_now(self) -> None:
        """Score every monitor and set the drift gauges (one pass at a time, never racing an unload)."""
        self.flush()
        with self._export_lock:
            self._compute_all()

    def _compute_all(self) -> None:
        for monitor in self._monitors():
            result = monitor.evaluate()
            if not result.scores:
                self._metrics.forget_drift_output(*monitor.labels)
            self._metrics.drift_computed(
                *monitor.labels,
                result.scores,
                alert=result.alert,
                window_rows=result.window_rows,
                reference_rows=result.reference_rows,
            )

    def prediction_counts(self) -> Iterator[PredictionCounts]:
        self.flush()
        return (monitor.counts() for monitor in self._monitors())

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the drift engine is already running")
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="drift-engine", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _run(self) -> None:
        due = time.monotonic() + self._interval_s
        while not self._stopping.wait(min(FLUSH_S, self._interval_s)):
            try:
                if time.monotonic() >= due:
                    due += self._interval_s
                    self.compute_now()
                else:
                    self.flush()
            except Exception:
                log.exception("computing drift scores failed")
