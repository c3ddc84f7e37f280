"""`PredictionMonitor`: the distribution of one output of one version, its window and its drift score.

On the request path `PredictionMonitor.observe(output)` does work bounded by the request's own size and
independent of the window: one argmax + bincount + confidence binning (classification), or one
histogram + a sample of at most `values_per_request` values (numeric), added to the newest of at most
`window.buckets` pre-allocated buckets. Scoring (`evaluate`) runs off the request path.

Window: the last `window.requests` requests AND the last `window.seconds` seconds, at a granularity of
1/`window.buckets` (a bucket closes when full or when its time span ends; buckets that started more
than `window.seconds` ago, or beyond the newest `window.buckets`, are dropped whole).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from serving.drift.config import DriftConfig, OutputSpec
from serving.drift.reference import CONFIDENCE_EDGES, N_CONFIDENCE_BINS, Reference
from serving.drift.statistics import js_distance, ks_statistic, psi, wasserstein
from serving.telemetry.predictions import BucketCounts, PredictionCounts
from serving.types import Array

Clock = Callable[[], float]


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

    def observe(self, batch_output: Array, requests: int = 1) -> None:
        """Count the output of `requests` requests (their rows along axis 0, together); raises ValueError
        for a mismatched shape."""
        if batch_output.ndim == 0 or batch_output.shape[0] == 0:
            return
        request = self._summarise(batch_output, requests)
        now = self._clock()
        with self._lock:
            self._totals.add(request)
            self._bucket(now).add(request)
            if self._capture is not None:
                self._capture.add(request)
                if self._capture.rows >= self._config.reference_rows:
                    self._reference, self._capture = self._captured(self._capture), None

    def _summarise(self, batch: Array, requests: int) -> _Counts:
        """Requests' output reduced to counts: O(its size), vectorised, no shared state touched."""
        request = self._new_counts(0)
        request.requests, request.rows = requests, int(batch.shape[0])
        if self.spec.kind == "classification":
            if batch.ndim != 2 or batch.shape[1] != self._n_classes:
                raise ValueError(f"expected [rows, {self._n_classes}] probabilities, got {batch.shape}")
            top = batch.argmax(axis=1)
            conf = batch[np.arange(batch.shape[0]), top].astype(np.float64)
            bins = np.clip(
                np.searchsorted(CONFIDENCE_EDGES, conf, side="right") - 1, 0, N_CONFIDENCE_BINS - 1
            )
            request.classes = np.bincount(top, minlength=self._n_classes)
            request.confidence = np.bincount(bins, minlength=N_CONFIDENCE_BINS)
            request.value_sum = float(conf.sum())
            return request
        values = batch.astype(np.float64, copy=False).ravel()
        values = values[np.isfinite(values)]
        edges = self.spec.edges
        request.value_hist = np.bincount(
            np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1
        )
        request.value_sum = float(values.sum())
        k = self._config.values_per_request * requests
        request.values = values if values.size <= k else values[self._rng.integers(0, values.size, k)]
        request.n_values = request.values.size
        return request

    def _new_counts(self, sample_requests: int, start: float = 0.0) -> _Counts:
        """Empty counts with room for the value samples of `sample_requests` requests (numeric)."""
        classification = self.spec.kind == "classification"
        return _Counts(
            classes=np.zeros(self._n_classes, np.int64),
            confidence=np.zeros(N_CONFIDENCE_BINS if classification else 0, np.int64),
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
