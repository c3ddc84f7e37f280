"""Every metric the core moves: its name, type, labels and buckets, in `ServingMetrics`.

Prometheus conventions: base units (seconds, bytes, ratios 0..1), counters end in `_total`, every name
starts with `serving_` (except the standard `process_*` series of ProcessCollector), per-model series
carry `model` and `version`. Every label value comes from a bounded set: model names go through
`model_label` (unknown → "_unknown"); versions are those the registry loaded; gRPC codes, stages,
version states (serving.lifecycle.state.VersionState), reject reasons and drift statistics come from the
fixed tables below.

No global state: `ServingMetrics(registry)` registers everything on the registry it is given, and the
core calls its narrow methods. Series read at scrape time have their own collectors, which
`ServingMetrics` registers too: GPUs in serving.telemetry.gpu, prediction distributions (from a
`PredictionSource`, serving.drift.engine.DriftEngine) in serving.telemetry.predictions.
docs/metrics.md lists it all.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Mapping
from typing import Literal
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    start_http_server,
)

from serving.backends.base import ComputeTimings
from serving.lifecycle.state import VersionState
from serving.telemetry.fast_metrics import FastCounter, FastHistogram
from serving.telemetry.gpu import GpuCollector, GpuProbe, detect_gpu_probe
from serving.telemetry.predictions import PredictionCollector, PredictionSource

UNKNOWN = "_unknown"
# fmt: off
GRPC_CODES = (
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
    "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
    "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
)
# 50 µs (a small CPU model) … 10 s (a large GPU batch), 1-2.5-5 per decade.
LATENCY_BUCKETS = (
    5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
# fmt: on
STAGES = ("queue", "compute_input", "compute_infer", "compute_output")
# The batcher's reject reasons → serving_requests_rejected_total's `reason` values (anything else: "other").
REJECT_REASONS = {
    "queue_full": "queue_full",
    "deadline": "deadline_exceeded",
    "unmeetable": "deadline_unmeetable",  # refused at admission: the queue ahead outlasts the deadline
    "cancelled": "cancelled",
}
DRIFT_STATISTICS = ("psi", "js_distance", "confidence_psi", "ks", "wasserstein")

BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
AGREEMENT_BUCKETS = (0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.999, 1.0)
DEFAULT_CLASS_LABEL_LIMIT = 100

_MV = ("model", "version")
_MVO = ("model", "version", "output")


def model_label(name: str, known: Container[str]) -> str:
    """`name` if it is a model (or version) the server knows, else "_unknown": clients cannot add series."""
    return name if name in known else UNKNOWN


# ---------------------------------------------------------------- the metrics the core moves


class ServingMetrics:
    """Owns every `serving_*` metric; the core calls the narrow methods below."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        gpu_probe: GpuProbe | None | Literal["auto"] = "auto",
        process_metrics: bool = True,
        class_label_limit: int = DEFAULT_CLASS_LABEL_LIMIT,
    ) -> None:
        self._init_requests(registry)
        self._init_batches(registry)
        self._init_lifecycle(registry)
        self._init_drift(registry)
        self._predictions = PredictionCollector(class_label_limit)
        registry.register(self._predictions)
        probe = detect_gpu_probe() if gpu_probe == "auto" else gpu_probe
        if probe is not None:
            registry.register(GpuCollector(probe))
        if process_metrics:
            ProcessCollector(registry=registry)

    def _init_requests(self, r: CollectorRegistry) -> None:
        self._requests = FastCounter(
            "serving_requests_total", "Inference requests finished, by gRPC status code.", [*_MV, "code"], r
        )
        self._request_seconds = FastHistogram(
            "serving_request_duration_seconds",
            "End-to-end request latency in the servicer.",
            _MV,
            r,
            LATENCY_BUCKETS,
        )
        self._rejected = Counter(
            "serving_requests_rejected_total",
            "Requests dropped before execution, by reason.",
            [*_MV, "reason"],
            registry=r,
        )
        self._in_flight = Gauge(
            "serving_in_flight_requests",
            "Requests queued or executing in a version's batcher.",
            _MV,
            registry=r,
        )
        self._routed = FastCounter(
            "serving_routed_requests_total", "Requests the router sent to a version.", _MV, r
        )
        self._weight = Gauge(
            "serving_traffic_weight_ratio", "Configured traffic share of a version (0..1).", _MV, registry=r
        )
        shadow_labels = [*_MV, "primary"]
        self._shadow_agreement = Histogram(
            "serving_shadow_agreement_ratio",
            "Fraction of rows where a shadow version agreed with the primary.",
            shadow_labels,
            buckets=AGREEMENT_BUCKETS,
            registry=r,
        )
        self._shadow_seconds = Histogram(
            "serving_shadow_duration_seconds",
            "Latency of the shadow copy of a request.",
            shadow_labels,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    def _init_batches(self, r: CollectorRegistry) -> None:
        self._stage_seconds = FastHistogram(
            "serving_stage_duration_seconds",
            "Time in one stage: queue (per request) or compute (per batch).",
            [*_MV, "stage"],
            r,
            LATENCY_BUCKETS,
        )
        self._inferences = FastCounter(
            "serving_inferences_total", "Rows inferred in successful batches.", _MV, r
        )
        self._executions = FastCounter("serving_executions_total", "Batches executed successfully.", _MV, r)
        self._failures = Counter(
            "serving_execution_failures_total", "Batches the backend failed.", _MV, registry=r
        )
        self._batch_size = FastHistogram(
            "serving_batch_size", "Rows per executed batch.", _MV, r, BATCH_SIZE_BUCKETS
        )
        self._queue_depth = Gauge(
            "serving_queue_depth", "Requests waiting in a version's batcher.", _MV, registry=r
        )
        self._queue_capacity = Gauge(
            "serving_queue_capacity", "Maximum requests a version's batcher queues.", _MV, registry=r
        )

    def _init_lifecycle(self, r: CollectorRegistry) -> None:
        self._load_seconds = Gauge(
            "serving_model_load_duration_seconds", "Time the last load (with warm-up) took.", _MV, registry=r
        )
        self._state = Gauge(
            "serving_model_version_state",
            "1 for the version's current state, 0 for the others.",
            [*_MV, "state"],
            registry=r,
        )
        self._healthy = Gauge(
            "serving_model_version_healthy",
            "0 while the version's batches keep failing one after another (ModelReady false), else 1.",
            _MV,
            registry=r,
        )

    def _init_drift(self, r: CollectorRegistry) -> None:
        self._drift_score = Gauge(
            "serving_drift_score",
            "Drift of predictions in the window against the reference.",
            [*_MVO, "statistic"],
            registry=r,
        )
        self._drift_dropped = Counter(
            "serving_drift_dropped_total",
            "Requests whose outputs drift monitoring skipped: its queue was full.",
            _MV,
            registry=r,
        )
        self._drift_alert = Gauge(
            "serving_drift_alert", "1 when a drift score is over its threshold.", _MVO, registry=r
        )
        self._drift_window_rows = Gauge(
            "serving_drift_window_rows", "Prediction rows in the current drift window.", _MVO, registry=r
        )
        self._drift_reference_rows = Gauge(
            "serving_drift_reference_rows",
            "Prediction rows behind the reference distribution.",
            _MVO,
            registry=r,
        )

    # requests
    def request_finished(self, model: str, version: str, grpc_code: str, seconds: float) -> None:
        code = grpc_code if grpc_code in GRPC_CODES else grpc_code.upper()
        code = code if code in GRPC_CODES else "UNKNOWN"
        self._requests.labels(model, version, code).inc()
        self._request_seconds.labels(model, version).observe(seconds)

    def request_queued_for(self, model: str, version: str, seconds: float) -> None:
        self._stage_seconds.labels(model, version, "queue").observe(seconds)

    def request_rejected(self, model: str, version: str, reason: str) -> None:
        """`reason`: the batcher's ("queue_full", "deadline", "cancelled"), see REJECT_REASONS."""
        self._rejected.labels(model, version, REJECT_REASONS.get(reason, "other")).inc()

    def routed(self, model: str, version: str) -> None:
        self._routed.labels(model, version).inc()

    def shadow_compared(
        self, model: str, primary: str, shadow: str, agreement: float, seconds: float
    ) -> None:
        self._shadow_agreement.labels(model, shadow, primary).observe(agreement)
        self._shadow_seconds.labels(model, shadow, primary).observe(seconds)

    # batches
    def batch_executed(
        self, model: str, version: str, rows: int, timings: ComputeTimings | None, failed: bool = False
    ) -> None:
        if failed:
            self._failures.labels(model, version).inc()
        else:
            self._executions.labels(model, version).inc()
            self._inferences.labels(model, version).inc(rows)
            self._batch_size.labels(model, version).observe(rows)
        if timings is not None:
            for stage, ns in zip(
                STAGES[1:], (timings.input_ns, timings.infer_ns, timings.output_ns), strict=True
            ):
                self._stage_seconds.labels(model, version, stage).observe(ns / 1e9)

    # lifecycle
    def model_loaded(self, model: str, version: str, seconds: float) -> None:
        self._load_seconds.labels(model, version).set(seconds)

    def watch_version(
        self,
        model: str,
        version: str,
        *,
        state: Callable[[], str],
        queue_depth: Callable[[], int],
        in_flight: Callable[[], int],
        queue_capacity: int,
        traffic_weight: Callable[[], float] | None = None,
        healthy: Callable[[], bool] | None = None,
    ) -> None:
        """Read the version's state, queue depth, in-flight count (and traffic share) at scrape time, so
        nothing is counted per request; a later call for the same labels replaces the functions.
        `queue_capacity` 0 = unbounded (not exported)."""
        for candidate in VersionState:
            self._state.labels(model, version, candidate.value).set_function(_one_hot(state, candidate.value))
        self._queue_depth.labels(model, version).set_function(queue_depth)
        self._in_flight.labels(model, version).set_function(in_flight)
        if queue_capacity > 0:
            self._queue_capacity.labels(model, version).set(queue_capacity)
        if traffic_weight is not None:
            self._weight.labels(model, version).set_function(traffic_weight)
        if healthy is not None:
            self._healthy.labels(model, version).set_function(lambda: float(healthy()))

    def forget_version(self, model: str, version: str) -> None:
        """Remove every series of an unloaded version (its state too: call this after UNLOADED is scraped,
        or not at all if dashboards should keep showing it)."""
        by_version = {"model": model, "version": version}
        for metric in (
            self._requests,
            self._request_seconds,
            self._rejected,
            self._in_flight,
            self._routed,
            self._weight,
            self._healthy,
            self._shadow_agreement,
            self._shadow_seconds,
            self._stage_seconds,
            self._inferences,
            self._executions,
            self._failures,
            self._batch_size,
            self._queue_depth,
            self._queue_capacity,
            self._load_seconds,
            self._state,
            self._drift_score,
            self._drift_alert,
            self._drift_window_rows,
            self._drift_reference_rows,
            self._drift_dropped,
        ):
            metric.remove_by_labels(by_version)
        for metric in (self._shadow_agreement, self._shadow_seconds):
            metric.remove_by_labels({"model": model, "primary": version})

    # drift and prediction distributions
    def drift_computed(
        self,
        model: str,
        version: str,
        output: str,
        scores: Mapping[str, float],
        *,
        alert: bool,
        window_rows: int,
        reference_rows: int,
    ) -> None:
        for statistic, value in scores.items():
            if statistic not in DRIFT_STATISTICS:
                raise ValueError(f"unknown drift statistic {statistic!r}; expected one of {DRIFT_STATISTICS}")
            self._drift_score.labels(model, version, output, statistic).set(value)
        self._drift_alert.labels(model, version, output).set(1.0 if alert else 0.0)
        self._drift_window_rows.labels(model, version, output).set(window_rows)
        self._drift_reference_rows.labels(model, version, output).set(reference_rows)

    def forget_drift_output(self, model: str, version: str, output: str) -> None:
        labels = {"model": model, "version": version, "output": output}
        for metric in (
            self._drift_score,
            self._drift_alert,
            self._drift_window_rows,
            self._drift_reference_rows,
        ):
            metric.remove_by_labels(labels)

    def drift_dropped(self, model: str, version: str) -> None:
        """A request's outputs were not summarised: the drift queue was full."""
        self._drift_dropped.labels(model, version).inc()

    def watch_predictions(self, source: PredictionSource) -> None:
        """Export `source`'s prediction distributions at every scrape (nothing counted per request here)."""
        self._predictions.add(source)


def _one_hot(state: Callable[[], str], candidate: str) -> Callable[[], float]:
    return lambda: 1.0 if state() == candidate else 0.0


def start_metrics_http(registry: CollectorRegistry, host: str, port: int) -> tuple[WSGIServer, int]:
    """Serve /metrics of `registry` from a daemon thread; port 0 picks a free port, which is returned.
    Stop with `server.shutdown(); server.server_close()`."""
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server, int(server.server_port)
