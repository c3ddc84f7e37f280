"""serving.telemetry.observer: one version's events move VersionStats and /metrics together, gauges are read
at scrape time, drift sees every successful request, and a version's series live as long as it does."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from serving.backends.base import Placement
from serving.core.request import InferenceRequest
from serving.drift.engine import DriftEngine
from serving.errors import QueueFull
from serving.lifecycle.repository import ModelRepository, version_source
from serving.lifecycle.version import ModelVersion, VersionState
from serving.telemetry.metrics import ServingMetrics
from serving.telemetry.observer import Telemetry
from serving.types import Array, TensorMap
from tests.model_factory import add_model_config, write_add_repository
from tests.unit.fake_backend import FakeBackend


def add_one(inputs: TensorMap) -> dict[str, Array]:
    return {"y": np.asarray(inputs["x"]) + 1}


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


Scheduled = list[tuple[float, Callable[[], None]]]
FORGET_AFTER_S = 300.0


@pytest.fixture
def scheduled() -> Scheduled:
    """What the telemetry asked to run later (delay, callback); a test runs them when it wants."""
    return []


@pytest.fixture
def telemetry(registry: CollectorRegistry, scheduled: Scheduled) -> Telemetry:
    metrics = ServingMetrics(registry, gpu_probe=None, process_metrics=False)

    def call_later(delay_s: float, callback: Callable[[], None]) -> None:
        scheduled.append((delay_s, callback))

    return Telemetry(metrics, DriftEngine(metrics), forget_after_s=FORGET_AFTER_S, call_later=call_later)


def run_scheduled(scheduled: Scheduled) -> list[float]:
    """Run every callback as if its delay had passed; returns the delays."""
    delays = [delay for delay, _ in scheduled]
    for _, callback in scheduled:
        callback()
    scheduled.clear()
    return delays


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, {"model": "add", "version": "1", **labels})


def make_version(root: Path, telemetry: Telemetry, config: str | None = None) -> ModelVersion:
    repository = ModelRepository(write_add_repository(root, config=config))
    spec = repository.read("add")
    return ModelVersion(spec, version_source(spec, 1), [Placement("cpu")], telemetry)


def request(rows: int) -> InferenceRequest:
    return InferenceRequest("add", "", "", {"x": np.ones((rows, 4), np.float32)})


async def test_one_event_stream_feeds_statistics_metrics_and_drift(
    tmp_path: Path, registry: CollectorRegistry, telemetry: Telemetry
) -> None:
    version = make_version(tmp_path, telemetry)
    await version.load(lambda *_: FakeBackend(add_one))
    assert version.state is VersionState.READY
    assert value(registry, "serving_model_version_state", state="READY") == 1.0
    assert value(registry, "serving_model_version_state", state="LOADING") == 0.0
    assert (value(registry, "serving_model_load_duration_seconds") or 0) > 0

    for rows in (1, 2, 3):
        await version.infer(request(rows), deadline=None, timeout_s=None)
    stats = version.stats.snapshot()
    assert stats.inference_count == value(registry, "serving_inferences_total") == 6
    assert stats.execution_count == value(registry, "serving_executions_total") == 3
    assert stats.queue.count == value(registry, "serving_stage_duration_seconds_count", stage="queue") == 3
    assert value(registry, "serving_stage_duration_seconds_sum", stage="queue") == pytest.approx(
        stats.queue.ns / 1e9
    )
    assert value(registry, "serving_stage_duration_seconds_count", stage="compute_infer") == 3
    assert value(registry, "serving_batch_size_sum") == 6
    # drift's prediction histogram (numeric output y): every value of every successful request
    assert value(registry, "serving_prediction_value_bucket", output="y", le="+Inf") == 6 * 4


async def test_queue_depth_and_in_flight_are_read_at_scrape(
    tmp_path: Path, registry: CollectorRegistry, telemetry: Telemetry
) -> None:
    queue = "dynamic_batching { default_queue_policy { max_queue_size: 2 } }"
    config = add_model_config("add", max_batch_size=1, batching=queue)
    version = make_version(tmp_path, telemetry, config)
    backend = FakeBackend(add_one)
    await version.load(lambda *_: backend)
    assert value(registry, "serving_queue_capacity") == 2
    backend.hold()
    running = [asyncio.create_task(version.infer(request(1), None, None))]
    await backend.wait_started(2)  # warm-up was batch 1; the first request is running (held)
    running += [asyncio.create_task(version.infer(request(1), None, None)) for _ in range(2)]
    while version.queue_depth < 2:
        await asyncio.sleep(0)
    assert value(registry, "serving_queue_depth") == 2
    assert value(registry, "serving_in_flight_requests") == 3
    with pytest.raises(QueueFull):
        await version.infer(request(1), None, None)
    assert value(registry, "serving_requests_rejected_total", reason="queue_full") == 1
    backend.release()
    await asyncio.gather(*running)
    assert value(registry, "serving_queue_depth") == 0
    assert value(registry, "serving_in_flight_requests") == 0


async def test_unload_drops_drift_and_forgets_series_later(
    tmp_path: Path, registry: CollectorRegistry, telemetry: Telemetry, scheduled: Scheduled
) -> None:
    version = make_version(tmp_path, telemetry)
    await version.load(lambda *_: FakeBackend(add_one))
    await version.infer(request(1), None, None)
    assert telemetry.drift is not None and telemetry.drift.monitor("add", "1", "y") is not None
    await version.drain_and_unload()
    assert telemetry.drift.monitor("add", "1", "y") is None
    assert value(registry, "serving_model_version_state", state="UNLOADED") == 1.0  # seen for a while
    assert run_scheduled(scheduled) == [FORGET_AFTER_S]
    assert value(registry, "serving_model_version_state", state="UNLOADED") is None
    assert value(registry, "serving_inferences_total") is None


async def test_hot_swap_keeps_the_labels_of_the_new_instance(
    tmp_path: Path, registry: CollectorRegistry, telemetry: Telemetry, scheduled: Scheduled
) -> None:
    old = make_version(tmp_path, telemetry)
    await old.load(lambda *_: FakeBackend(add_one))
    new = make_version(tmp_path, telemetry)
    await new.load(lambda *_: FakeBackend(add_one))
    await old.drain_and_unload()  # the swap retires the old instance of the same version
    run_scheduled(scheduled)  # whatever was to be forgotten later, now
    assert value(registry, "serving_model_version_state", state="READY") == 1.0
    await new.infer(request(2), None, None)
    assert value(registry, "serving_inferences_total") == 2
    assert telemetry.drift is not None and telemetry.drift.monitor("add", "1", "y") is not None


async def test_bad_drift_parameter_fails_the_version(
    tmp_path: Path, registry: CollectorRegistry, telemetry: Telemetry
) -> None:
    bad = 'parameters { key: "drift.window.requests" value { string_value: "many" } }'
    version = make_version(tmp_path, telemetry, add_model_config("add", extra=bad))
    await version.load(lambda *_: FakeBackend(add_one))
    assert version.state is VersionState.FAILED
    assert "drift.window.requests" in version.reason
    assert value(registry, "serving_model_version_state", state="FAILED") == 1.0


async def test_without_metrics_only_statistics_move(tmp_path: Path) -> None:
    version = make_version(tmp_path, Telemetry())
    await version.load(lambda *_: FakeBackend(add_one))
    await version.infer(request(2), None, None)
    assert version.stats.snapshot().inference_count == 2


async def test_a_version_loaded_again_before_the_delay_keeps_its_series(
    tmp_path: Path, registry: CollectorRegistry, telemetry: Telemetry, scheduled: Scheduled
) -> None:
    old = make_version(tmp_path, telemetry)
    await old.load(lambda *_: FakeBackend(add_one))
    await old.infer(request(3), None, None)
    await old.drain_and_unload()
    again = make_version(tmp_path, telemetry)
    await again.load(lambda *_: FakeBackend(add_one))
    assert run_scheduled(scheduled) == [FORGET_AFTER_S]
    assert value(registry, "serving_model_version_state", state="READY") == 1.0
    assert value(registry, "serving_inferences_total") == 3


async def test_by_default_series_are_forgotten_on_the_event_loop(
    tmp_path: Path, registry: CollectorRegistry
) -> None:
    metrics = ServingMetrics(registry, gpu_probe=None, process_metrics=False)
    version = make_version(tmp_path, Telemetry(metrics, forget_after_s=0.0))
    await version.load(lambda *_: FakeBackend(add_one))
    await version.drain_and_unload()
    assert value(registry, "serving_model_version_state", state="UNLOADED") == 1.0
    for _ in range(100):  # the loop runs the zero-delay callback on one of its next turns
        if value(registry, "serving_model_version_state", state="UNLOADED") is None:
            break
        await asyncio.sleep(0)
    assert value(registry, "serving_model_version_state", state="UNLOADED") is None
