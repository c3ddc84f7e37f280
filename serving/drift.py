"""Prediction distributions per (model, version, output) and their drift against a reference.

On the request path `PredictionMonitor.observe(output)` does work bounded by the request's own size and
independent of the window: one argmax + bincount + confidence binning (classification), or one
histogram + a sample of at most `values_per_request` values (numeric), added to the newest of at most
`window.buckets` pre-allocated buckets. Off the request path `DriftEngine` (a daemon thread, every
`interval_s`) sums the live buckets, scores them against the reference and sets the gauges.

Window: the last `window.requests` requests AND the last `window.seconds` seconds, at a granularity of
1/`window.buckets` (a bucket closes when full or when its time span ends; buckets that started more
than `window.seconds` ago, or beyond the newest `window.buckets`, are dropped whole).

Statistics (docs/metrics.md has the formulas): classification → `psi`, `js_distance` on the predicted
class counts and `confidence_psi` on the top-1 confidence histogram; numeric → `ks`, `wasserstein` on
the sampled values. JS distance uses base 2 (range 0..1). PSI floors proportions at PSI_EPSILON.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from serving.errors import ModelConfigError
from serving.metrics import DRIFT_STATISTICS, BucketCounts, PredictionCounts, ServingMetrics
from serving.types import Array

log = logging.getLogger(__name__)

OutputKind = Literal["classification", "numeric"]
Clock = Callable[[], float]
PSI_EPSILON = 1e-4
CONFIDENCE_EDGES = tuple(round(0.1 * i, 10) for i in range(11))  # 0.0, 0.1, …, 1.0
_N_CONF = len(CONFIDENCE_EDGES) - 1
DEFAULT_VALUE_EDGES = (-10.0, -5.0, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 5.0, 10.0)
DEFAULT_THRESHOLDS = {"psi": 0.2, "js_distance": 0.2, "confidence_psi": 0.2, "ks": 0.15}
REFERENCE_FILE = "reference.json"


# ---------------------------------------------------------------- statistics (pure functions)


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


# ---------------------------------------------------------------- configuration (config.pbtxt parameters)


@dataclass(frozen=True)
class OutputSpec:
    kind: OutputKind
    edges: tuple[float, ...] = DEFAULT_VALUE_EDGES  # numeric: buckets of serving_prediction_value


@dataclass(frozen=True)
class DriftConfig:
    """From config.pbtxt `parameters` (string values): see docs/metrics.md for every `drift.*` key."""

    outputs: Mapping[str, OutputSpec | None] = field(default_factory=dict)  # None: the output is "off"
    auto: bool = True  # monitor outputs without a `drift.<output>` key, kind inferred from the first batch
    window_requests: int = 2000
    window_seconds: float = 600.0
    window_buckets: int = 10
    min_rows: int = 500
    reference_rows: int = 2000
    values_per_request: int = 16
    thresholds: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, str]) -> DriftConfig:
        fields: dict[str, Any] = {"outputs": {}, "thresholds": dict(DEFAULT_THRESHOLDS)}
        for key, value in parameters.items():
            if key.startswith("drift."):
                _apply_key(fields, key, value.strip())
        config = cls(**fields)
        if config.window_buckets > config.window_requests:
            raise ModelConfigError("drift.window.buckets must not exceed drift.window.requests")
        return config

    def spec_for(self, output: str, first_batch: Array) -> OutputSpec | None:
        if output in self.outputs:
            return self.outputs[output]
        if not self.auto:
            return None
        kind = infer_kind(first_batch)
        return OutputSpec(kind) if kind is not None else None


_INT_KEYS = {
    "drift.window.requests": "window_requests",
    "drift.window.buckets": "window_buckets",
    "drift.window.min_rows": "min_rows",
    "drift.reference.rows": "reference_rows",
    "drift.sample.values_per_request": "values_per_request",
}


def _apply_key(fields: dict[str, Any], key: str, value: str) -> None:
    try:
        if key in _INT_KEYS:
            fields[_INT_KEYS[key]] = _positive(int(value))
        elif key == "drift.window.seconds":
            fields["window_seconds"] = _positive(float(value))
        elif key == "drift.auto":
            fields["auto"] = {"true": True, "false": False}[value.lower()]
        elif key.startswith("drift.threshold."):
            statistic = key.removeprefix("drift.threshold.")
            if statistic not in DRIFT_STATISTICS:
                raise ValueError(f"statistic must be one of {DRIFT_STATISTICS}")
            fields["thresholds"][statistic] = _positive(float(value))
        else:
            fields["outputs"][key.removeprefix("drift.")] = _output_spec(value)
    except (ValueError, KeyError) as exc:
        raise ModelConfigError(f"config.pbtxt parameter {key!r} = {value!r}: {exc}") from exc


def _positive(x: float) -> Any:
    if not x > 0 or not math.isfinite(x):
        raise ValueError("must be a positive number")
    return x


def _output_spec(value: str) -> OutputSpec | None:
    kind, _, edges_text = value.partition(":")
    if value == "off":
        return None
    if value == "classification":
        return OutputSpec("classification")
    if kind != "numeric":
        raise ValueError("expected 'classification', 'numeric', 'numeric:<e1>,<e2>,…' or 'off'")
    if not edges_text:
        return OutputSpec("numeric")
    edges = tuple(float(e) for e in edges_text.split(","))
    if not all(math.isfinite(e) for e in edges) or any(
        b <= a for a, b in zip(edges, edges[1:], strict=False)
    ):
        raise ValueError("bucket edges must be finite and strictly increasing")
    return OutputSpec("numeric", edges)


def infer_kind(batch: Array) -> OutputKind | None:
    """2-D float rows of non-negative numbers summing to ~1 → classification; other numbers → numeric."""
    if batch.dtype.kind not in "fiub":
        return None
    if batch.dtype.kind == "f" and batch.ndim == 2 and batch.shape[1] >= 2 and batch.size > 0:
        rows = batch.astype(np.float64)
        if np.all(rows >= -1e-6) and np.allclose(rows.sum(axis=1), 1.0, atol=1e-3):
            return "classification"
    return "numeric"


# ---------------------------------------------------------------- reference distributions


@dataclass(frozen=True)
class Reference:
    kind: OutputKind
    n: int  # prediction rows behind it
    class_counts: tuple[int, ...] = ()  # classification
    confidence_counts: tuple[int, ...] = ()  # classification, over CONFIDENCE_EDGES
    values: tuple[float, ...] = ()  # numeric: a sample of values
    source: str = "set"  # "file" | "captured" | "set"

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], source: str = "set") -> Reference:
        kind = obj.get("kind")
        if kind == "classification":
            hist = obj["confidence_hist"]
            if len(hist["edges"]) != len(CONFIDENCE_EDGES) or not np.allclose(
                hist["edges"], CONFIDENCE_EDGES
            ):
                raise ValueError(f"confidence_hist edges must be {list(CONFIDENCE_EDGES)}")
            counts = tuple(int(c) for c in hist["counts"])
            if len(counts) != _N_CONF or not obj["class_counts"]:
                raise ValueError(f"need {_N_CONF} confidence_hist counts and at least one class count")
            return cls(
                "classification",
                int(obj["n"]),
                tuple(int(c) for c in obj["class_counts"]),
                counts,
                source=source,
            )
        if kind == "numeric":
            values = tuple(float(v) for v in obj["values"])
            return cls("numeric", int(obj.get("n", len(values))), values=values, source=source)
        raise ValueError(f"reference kind must be 'classification' or 'numeric', got {kind!r}")

    def to_json(self, output: str) -> dict[str, Any]:
        if self.kind == "numeric":
            return {"output": output, "kind": "numeric", "values": list(self.values), "n": self.n}
        hist = {"edges": list(CONFIDENCE_EDGES), "counts": list(self.confidence_counts)}
        return {
            "output": output,
            "kind": self.kind,
            "class_counts": list(self.class_counts),
            "confidence_hist": hist,
            "n": self.n,
        }


def load_references(path: Path) -> dict[str, Reference]:
    """Read a version folder's reference.json: one object, or a list of objects, each naming its output."""
    try:
        data = json.loads(path.read_text())
        objects = data if isinstance(data, list) else [data]
        return {str(obj["output"]): Reference.from_json(obj, source="file") for obj in objects}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelConfigError(f"{path}: unusable drift reference: {exc}") from exc


# ---------------------------------------------------------------- the monitor of one output


@dataclass
class _Counts:
    """Predictions summed over a span: one request, one window bucket, the capture, or since start."""

    classes: npt.NDArray[np.int64]  # classification: rows per predicted class
    confidence: npt.NDArray[np.int64]  # classification: rows per CONFIDENCE_EDGES bin
    value_hist: npt.NDArray[np.int64]  # numeric: values per OutputSpec.edges bucket (le), then above
    values: npt.NDArray[np.float64]  # numeric: pre-allocated sample buffer; the first n_values are live
    n_values: int = 0
    value_sum: float = 0.0  # numeric: sum of values; classification: sum of top-1 confidences
    requests: int = 0
    rows: int = 0
    start: float = 0.0

    def add(self, other: _Counts) -> None:
        self.requests, self.rows = self.requests + other.requests, self.rows + other.rows
        self.classes += other.classes
        self.confidence += other.confidence
        self.value_hist += other.value_hist
        self.value_sum += other.value_sum
        end = min(self.n_values + other.n_values, self.values.size)
        self.values[self.n_values : end] = other.values[: end - self.n_values]
        self.n_values = end


@dataclass(frozen=True)
class DriftResult:
    scores: dict[str, float]
    alert: bool
    window_rows: int
    reference_rows: int


class PredictionMonitor:
    """Distribution of one output of one version: window, reference, cumulative export counts.

    `n_classes` (classification) is the width of the output: its reference's, or the first batch's."""

    def __init__(
        self,
        labels: tuple[str, str, str],
        spec: OutputSpec,
        config: DriftConfig,
        *,
        n_classes: int = 0,
        clock: Clock = time.monotonic,
        reference: Reference | None = None,
        seed: int = 0,
    ) -> None:
        if spec.kind == "classification" and n_classes < 1:
            raise ValueError("a classification monitor needs the number of classes")
        self.labels, self.spec, self._config, self._clock = labels, spec, config, clock
        self._n_classes = n_classes if spec.kind == "classification" else 0
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        self._buckets: deque[_Counts] = deque()  # the window, oldest first
        self._bucket_requests = -(-config.window_requests // config.window_buckets)
        self._totals = self._new_counts(0)  # since start, for export
        self._reference: Reference | None = None
        self._capture: _Counts | None = None
        if reference is not None:
            self.set_reference(reference)
        else:
            self.reset_reference()

    @property
    def reference(self) -> Reference | None:
        return self._reference

    def set_reference(self, reference: Reference) -> None:
        if reference.kind != self.spec.kind:
            raise ValueError(f"a {reference.kind} reference for a {self.spec.kind} output")
        if reference.kind == "classification" and len(reference.class_counts) != self._n_classes:
            raise ValueError(f"reference has {len(reference.class_counts)} classes, output {self._n_classes}")
        with self._lock:
            self._reference, self._capture = reference, None

    def reset_reference(self) -> None:
        """Forget the reference and capture a new one from the next `reference.rows` prediction rows."""
        with self._lock:
            self._reference = None
            self._capture = self._new_counts(self._config.reference_rows)

    def observe(self, batch_output: Array) -> None:
        """Count one request's output (rows along axis 0); raises ValueError for a mismatched shape."""
        if batch_output.ndim == 0 or batch_output.shape[0] == 0:
            return
        request = self._summarise(batch_output)
        now = self._clock()
        with self._lock:
            self._totals.add(request)
            self._bucket(now).add(request)
            if self._capture is not None:
                self._capture.add(request)
                if self._capture.rows >= self._config.reference_rows:
                    self._reference, self._capture = self._captured(self._capture), None

    def _summarise(self, batch: Array) -> _Counts:
        """One request's output reduced to counts: O(its size), vectorised, no shared state touched."""
        request = self._new_counts(0)
        request.requests, request.rows = 1, int(batch.shape[0])
        if self.spec.kind == "classification":
            if batch.ndim != 2 or batch.shape[1] != self._n_classes:
                raise ValueError(f"expected [rows, {self._n_classes}] probabilities, got {batch.shape}")
            top = batch.argmax(axis=1)
            conf = batch[np.arange(batch.shape[0]), top].astype(np.float64)
            bins = np.clip(np.searchsorted(CONFIDENCE_EDGES, conf, side="right") - 1, 0, _N_CONF - 1)
            request.classes = np.bincount(top, minlength=self._n_classes)
            request.confidence = np.bincount(bins, minlength=_N_CONF)
            request.value_sum = float(conf.sum())
            return request
        values = batch.astype(np.float64, copy=False).ravel()
        values = values[np.isfinite(values)]
        edges = self.spec.edges
        request.value_hist = np.bincount(
            np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1
        )
        request.value_sum = float(values.sum())
        k = self._config.values_per_request
        request.values = values if values.size <= k else values[self._rng.integers(0, values.size, k)]
        request.n_values = request.values.size
        return request

    def _new_counts(self, sample_requests: int, start: float = 0.0) -> _Counts:
        """Empty counts with room for the value samples of `sample_requests` requests (numeric)."""
        classification = self.spec.kind == "classification"
        return _Counts(
            classes=np.zeros(self._n_classes, np.int64),
            confidence=np.zeros(_N_CONF if classification else 0, np.int64),
            value_hist=np.zeros(0 if classification else len(self.spec.edges) + 1, np.int64),
            values=np.empty(0 if classification else sample_requests * self._config.values_per_request),
            start=start,
        )

    def _bucket(self, now: float) -> _Counts:
        self._expire(now)
        span = self._config.window_seconds / self._config.window_buckets
        newest = self._buckets[-1] if self._buckets else None
        if newest is None or newest.requests >= self._bucket_requests or now - newest.start >= span:
            newest = self._new_counts(self._bucket_requests, start=now)
            self._buckets.append(newest)
            if len(self._buckets) > self._config.window_buckets:
                self._buckets.popleft()
        return newest

    def _expire(self, now: float) -> None:
        while self._buckets and self._buckets[0].start < now - self._config.window_seconds:
            self._buckets.popleft()

    def _captured(self, capture: _Counts) -> Reference:
        return Reference(
            self.spec.kind,
            capture.rows,
            tuple(capture.classes.tolist()),
            tuple(capture.confidence.tolist()),
            tuple(capture.values[: capture.n_values].tolist()),
            source="captured",
        )

    def window(self) -> _Counts:
        """The live window summed into one `_Counts` (a copy); `.values[:.n_values]` is its sample."""
        with self._lock:
            self._expire(self._clock())
            live = list(self._buckets)
            merged = self._new_counts(sum(b.requests for b in live))
            for bucket in live:
                merged.add(bucket)
            return merged

    def bucket_sizes(self) -> list[tuple[int, int]]:
        """(requests, sample capacity) of each live bucket: the window's memory, bounded by the config."""
        with self._lock:
            return [(b.requests, b.values.size) for b in self._buckets]

    def compute(self) -> dict[str, float]:
        return self.evaluate().scores

    def evaluate(self) -> DriftResult:
        """Score the window against the reference (off the request path)."""
        window, reference = self.window(), self._reference
        scores = _scores(reference, window) if reference is not None and window.rows > 0 else {}
        alert = window.rows >= self._config.min_rows and any(
            scores[s] > t for s, t in self._config.thresholds.items() if s in scores
        )
        return DriftResult(scores, alert, window.rows, reference.n if reference is not None else 0)

    def counts(self) -> PredictionCounts:
        """Cumulative counts since start, for serving_predicted_class / _confidence / _value."""
        model, version, output = self.labels
        with self._lock:
            totals = self._totals
            if self.spec.kind == "numeric":
                hist = BucketCounts(self.spec.edges, tuple(totals.value_hist.tolist()), totals.value_sum)
                return PredictionCounts(model, version, output, values=hist)
            conf = BucketCounts(CONFIDENCE_EDGES[1:], (*totals.confidence.tolist(), 0), totals.value_sum)
            return PredictionCounts(model, version, output, tuple(totals.classes.tolist()), confidence=conf)


def _scores(reference: Reference, window: _Counts) -> dict[str, float]:
    if reference.kind == "classification":
        return {
            "psi": psi(reference.class_counts, window.classes),
            "js_distance": js_distance(reference.class_counts, window.classes),
            "confidence_psi": psi(reference.confidence_counts, window.confidence),
        }
    current = window.values[: window.n_values]
    if current.size == 0 or not reference.values:
        return {}
    return {
        "ks": ks_statistic(reference.values, current),
        "wasserstein": wasserstein(reference.values, current),
    }


# ---------------------------------------------------------------- the engine: monitors of every version


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
    ) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self._metrics, self._interval_s, self._clock, self._seed = metrics, interval_s, clock, seed
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

    def observe(self, model: str, version: str, outputs: Mapping[str, Array]) -> None:
        """Count one request's outputs; never raises (a failing output is logged once and skipped)."""
        state = self._versions.get((model, version))
        if state is None:
            return
        for output, array in outputs.items():
            if output in state.skipped:
                continue
            try:
                monitor = state.monitors.get(output) or self._start_monitor(
                    (model, version, output), state, array
                )
                if monitor is not None:
                    monitor.observe(array)
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
        """The output's monitor, None until its first batch has been observed."""
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
        while not self._stopping.wait(self._interval_s):
            try:
                self.compute_now()
            except Exception:
                log.exception("computing drift scores failed")
