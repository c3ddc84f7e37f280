"""ServingMetrics: every method moves the series it owns, labels stay bounded, /metrics serves text."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable, Iterable

import pytest
from prometheus_client import CollectorRegistry

from serving.backends.base import ComputeTimings
from serving.telemetry.gpu import GpuReading
from serving.telemetry.metrics import UNKNOWN, ServingMetrics, model_label, start_metrics_http
from serving.telemetry.predictions import BucketCounts, PredictionCounts


class FakeGpu:
    def read(self) -> list[GpuReading]:
        return [GpuReading(0, 3 * 2**30, 80 * 2**30, 0.25), GpuReading(1, 2**30, 80 * 2**30, None)]


class FakePredictions:
    def __init__(self, counts: list[PredictionCounts]) -> None:
        self.counts = counts

    def prediction_counts(self) -> Iterable[PredictionCounts]:
        return self.counts


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> ServingMetrics:
    return ServingMetrics(registry, gpu_probe=None)


MV = {"model": "resnet", "version": "1"}


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, {**MV, **labels})


def test_request_finished_counts_by_code_and_observes_latency(
    registry: CollectorRegistry, metrics: ServingMetrics
) -> None:
    metrics.request_finished("resnet", "1", "OK", 0.003)
    metrics.request_finished("resnet", "1", "OK", 0.2)
    metrics.request_finished("resnet", "1", "resource_exhausted", 0.0001)
    metrics.request_finished("resnet", "1", "NOT_A_CODE", 0.0001)
    assert value(registry, "serving_requests_total", code="OK") == 2
    assert value(registry, "serving_requests_total", code="RESOURCE_EXHAUSTED") == 1
    assert value(registry, "serving_requests_total", code="UNKNOWN") == 1
    assert value(registry, "serving_request_duration_seconds_count") == 4
    assert value(registry, "serving_request_duration_seconds_sum") == pytest.approx(0.2032)
    assert value(registry, "serving_request_duration_seconds_bucket", le="0.005") == 3
    assert value(registry, "serving_request_duration_seconds_bucket", le="5e-05") == 0


def test_batch_executed_counts_rows_batches_stages(
    registry: CollectorRegistry, metrics: ServingMetrics
) -> None:
    metrics.batch_executed(
        "resnet", "1", 8, ComputeTimings(input_ns=20_000, infer_ns=3_000_000, output_ns=10_000)
    )
    metrics.batch_executed("resnet", "1", 3, None)
    metrics.batch_executed("resnet", "1", 5, None, failed=True)
    assert value(registry, "serving_inferences_total") == 11
    assert value(registry, "serving_executions_total") == 2
    assert value(registry, "serving_execution_failures_total") == 1
    assert value(registry, "serving_batch_size_bucket", le="4.0") == 1
    assert value(registry, "serving_batch_size_sum") == 11
    assert value(registry, "serving_stage_duration_seconds_sum", stage="compute_infer") == pytest.approx(
        0.003
    )
    assert value(registry, "serving_stage_duration_seconds_sum", stage="compute_input") == pytest.approx(2e-5)
    assert value(registry, "serving_stage_duration_seconds_count", stage="compute_output") == 1


def watch(metrics: ServingMetrics, version: str, state: Callable[[], str], **gauges: float) -> None:
    """The version gauges, read at scrape time from these functions (as the observer wires them)."""
    metrics.watch_version(
        "resnet",
        version,
        state=state,
        queue_depth=lambda: int(gauges.get("queue_depth", 0)),
        in_flight=lambda: int(gauges.get("in_flight", 0)),
        queue_capacity=int(gauges.get("queue_capacity", 0)),
        traffic_weight=(lambda: gauges["traffic_weight"]) if "traffic_weight" in gauges else None,
    )


def test_queue_and_gauges(registry: CollectorRegistry, metrics: ServingMetrics) -> None:
    metrics.request_queued_for("resnet", "1", 0.0004)
    metrics.request_rejected("resnet", "1", "queue_full")
    metrics.request_rejected("resnet", "1", "deadline")
    metrics.request_rejected("resnet", "1", "something odd")
    watch(metrics, "1", lambda: "READY", queue_depth=7, queue_capacity=64, in_flight=3)
    metrics.model_loaded("resnet", "1", 2.5)
    assert value(registry, "serving_stage_duration_seconds_count", stage="queue") == 1
    assert value(registry, "serving_requests_rejected_total", reason="queue_full") == 1
    assert value(registry, "serving_requests_rejected_total", reason="deadline_exceeded") == 1
    assert value(registry, "serving_requests_rejected_total", reason="other") == 1
    assert value(registry, "serving_queue_depth") == 7
    assert value(registry, "serving_queue_capacity") == 64
    assert value(registry, "serving_in_flight_requests") == 3
    assert value(registry, "serving_model_load_duration_seconds") == 2.5


def test_unbounded_queue_exports_no_capacity(registry: CollectorRegistry, metrics: ServingMetrics) -> None:
    watch(metrics, "1", lambda: "READY", queue_depth=1, queue_capacity=0)
    assert value(registry, "serving_queue_depth") == 1
    assert value(registry, "serving_queue_capacity") is None


def test_version_state_is_one_hot(registry: CollectorRegistry, metrics: ServingMetrics) -> None:
    state = ["LOADING"]
    watch(metrics, "1", lambda: state[0])
    assert value(registry, "serving_model_version_state", state="LOADING") == 1.0
    state[0] = "READY"  # read at scrape time: no call moves it
    states = {
        s: value(registry, "serving_model_version_state", state=s) for s in ("LOADING", "READY", "FAILED")
    }
    assert states == {"LOADING": 0.0, "READY": 1.0, "FAILED": 0.0}
    assert {
        s.labels["state"]
        for f in registry.collect()
        for s in f.samples
        if s.name == "serving_model_version_state"
    } == {"LOADING", "WARMING", "READY", "DRAINING", "UNLOADED", "FAILED"}


def test_traffic_split_and_shadow(registry: CollectorRegistry, metrics: ServingMetrics) -> None:
    watch(metrics, "1", lambda: "READY", traffic_weight=0.9)
    metrics.routed("resnet", "1")
    metrics.routed("resnet", "1")
    metrics.shadow_compared("resnet", primary="1", shadow="2", agreement=0.97, seconds=0.01)
    assert value(registry, "serving_traffic_weight_ratio") == 0.9
    assert value(registry, "serving_routed_requests_total") == 2
    shadow = {"model": "resnet", "version": "2", "primary": "1"}
    assert registry.get_sample_value("serving_shadow_agreement_ratio_sum", shadow) == pytest.approx(0.97)
    assert registry.get_sample_value("serving_shadow_agreement_ratio_bucket", {**shadow, "le": "0.95"}) == 0
    assert registry.get_sample_value("serving_shadow_duration_seconds_count", shadow) == 1


def test_drift_gauges(registry: CollectorRegistry, metrics: ServingMetrics) -> None:
    metrics.drift_computed(
        "resnet",
        "1",
        "probs",
        {"psi": 0.4, "js_distance": 0.2},
        alert=True,
        window_rows=900,
        reference_rows=5000,
    )
    assert value(registry, "serving_drift_score", output="probs", statistic="psi") == 0.4
    assert value(registry, "serving_drift_alert", output="probs") == 1
    assert value(registry, "serving_drift_window_rows", output="probs") == 900
    assert value(registry, "serving_drift_reference_rows", output="probs") == 5000
    with pytest.raises(ValueError, match="unknown drift statistic"):
        metrics.drift_computed(
            "resnet", "1", "probs", {"mse": 1.0}, alert=False, window_rows=0, reference_rows=0
        )
    metrics.forget_drift_output("resnet", "1", "probs")
    assert value(registry, "serving_drift_score", output="probs", statistic="psi") is None


def test_model_label_maps_unknown_names() -> None:
    known = {"resnet", "iris"}
    assert model_label("resnet", known) == "resnet"
    assert model_label("../../etc/passwd", known) == UNKNOWN
    assert model_label("", known) == UNKNOWN


def test_forget_version_removes_its_series_only(registry: CollectorRegistry, metrics: ServingMetrics) -> None:
    for version in ("1", "2"):
        metrics.request_finished("resnet", version, "OK", 0.01)
        metrics.batch_executed("resnet", version, 4, ComputeTimings(1, 2, 3))
        watch(metrics, version, lambda: "READY", queue_depth=1, queue_capacity=4, traffic_weight=0.5)
        metrics.drift_computed(
            "resnet", version, "p", {"psi": 0.1}, alert=False, window_rows=1, reference_rows=1
        )
    metrics.shadow_compared("resnet", primary="1", shadow="2", agreement=1.0, seconds=0.01)
    metrics.forget_version("resnet", "1")
    samples = [s for family in registry.collect() for s in family.samples if s.name.startswith("serving_")]
    assert samples and not [
        s for s in samples if s.labels.get("version") == "1" or s.labels.get("primary") == "1"
    ]
    assert (
        registry.get_sample_value("serving_requests_total", {"model": "resnet", "version": "2", "code": "OK"})
        == 1
    )


def test_prediction_source_is_exported_at_scrape(
    registry: CollectorRegistry, metrics: ServingMetrics
) -> None:
    confidence = BucketCounts((0.5, 1.0), (1, 4, 0), 4.1)
    values = BucketCounts((0.0, 1.0), (2, 1, 3), 10.0)
    source = FakePredictions(
        [
            PredictionCounts("resnet", "1", "probs", (3, 1, 1), confidence=confidence),
            PredictionCounts("resnet", "1", "score", values=values),
        ]
    )
    metrics.watch_predictions(source)
    assert value(registry, "serving_predicted_class_total", output="probs", **{"class": "2"}) == 1
    assert value(registry, "serving_prediction_confidence_bucket", output="probs", le="0.5") == 1
    assert value(registry, "serving_prediction_confidence_bucket", output="probs", le="+Inf") == 5
    assert value(registry, "serving_prediction_confidence_sum", output="probs") == 4.1
    assert value(registry, "serving_prediction_value_bucket", output="score", le="1.0") == 3
    assert value(registry, "serving_prediction_value_count", output="score") == 6
    assert value(registry, "serving_predicted_class_total", output="probs", **{"class": "_other"}) is None


def test_class_labels_beyond_the_limit_are_summed(registry: CollectorRegistry) -> None:
    metrics = ServingMetrics(registry, gpu_probe=None, class_label_limit=2)
    metrics.watch_predictions(FakePredictions([PredictionCounts("resnet", "1", "probs", (3, 1, 1, 4))]))
    assert value(registry, "serving_predicted_class_total", output="probs", **{"class": "1"}) == 1
    assert value(registry, "serving_predicted_class_total", output="probs", **{"class": "_other"}) == 5
    assert value(registry, "serving_predicted_class_total", output="probs", **{"class": "2"}) is None


def test_gpu_collector_only_with_a_probe(registry: CollectorRegistry) -> None:
    ServingMetrics(registry, gpu_probe=FakeGpu(), process_metrics=False)
    assert registry.get_sample_value("serving_gpu_memory_used_bytes", {"gpu": "0"}) == 3 * 2**30
    assert registry.get_sample_value("serving_gpu_memory_total_bytes", {"gpu": "1"}) == 80 * 2**30
    assert registry.get_sample_value("serving_gpu_utilization_ratio", {"gpu": "0"}) == 0.25
    assert registry.get_sample_value("serving_gpu_utilization_ratio", {"gpu": "1"}) is None
    without = CollectorRegistry()
    ServingMetrics(without, gpu_probe=None)
    assert not [f for f in without.collect() if f.name.startswith("serving_gpu")]


def test_process_collector_is_on_the_registry(registry: CollectorRegistry, metrics: ServingMetrics) -> None:
    assert registry.get_sample_value("process_resident_memory_bytes") is not None


def test_http_endpoint_serves_text_format_on_port_0(
    registry: CollectorRegistry, metrics: ServingMetrics
) -> None:
    metrics.request_finished("resnet", "1", "OK", 0.01)
    server, port = start_metrics_http(registry, "127.0.0.1", 0)
    try:
        assert port > 0
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            body = response.read().decode()
            content_type = response.headers["Content-Type"]
    finally:
        server.shutdown()
        server.server_close()
    assert content_type.startswith("text/plain")
    assert 'serving_requests_total{code="OK",model="resnet",version="1"} 1.0' in body
    assert "# TYPE serving_request_duration_seconds histogram" in body
