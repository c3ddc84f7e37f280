"""serving.api.request_log: bounded labels, status codes, access log sampling and structured fields."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import grpc
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from serving.api.request_log import RequestRecorder, request_labels
from serving.backends.base import Placement
from serving.cli import JsonFormatter
from serving.lifecycle.registry import ModelRegistry
from serving.lifecycle.repository import ModelRepository
from serving.proto import inference_pb2 as pb
from serving.telemetry.metrics import ServingMetrics
from serving.types import Array, TensorMap
from tests.model_factory import write_add_repository
from tests.unit.fake_backend import FakeBackend


def add_one(inputs: TensorMap) -> dict[str, Array]:
    return {"y": np.asarray(inputs["x"]) + 1}


@pytest.fixture
async def registry(tmp_path: Path) -> ModelRegistry:
    registry = ModelRegistry(
        ModelRepository(write_add_repository(tmp_path, versions=(1, 2))),
        lambda *_: FakeBackend(add_one),
        lambda spec, source: [Placement("cpu")],
    )
    await registry.load("add")
    return registry


def no_metadata() -> list[tuple[str, str]]:
    return []


async def test_labels_keep_known_names_only(registry: ModelRegistry) -> None:
    assert request_labels(registry, "add", "2") == ("add", "2")
    assert request_labels(registry, "add", "") == ("add", "_unknown")
    assert request_labels(registry, "add", "7") == ("add", "_unknown")
    assert request_labels(registry, "random-name", "1") == ("_unknown", "_unknown")


async def test_codes_and_latency_are_counted(registry: ModelRegistry) -> None:
    collector = CollectorRegistry()
    recorder = RequestRecorder(ServingMetrics(collector, gpu_probe=None), registry, sample_rate=0.0)
    served = ("add", "2")
    recorder.finished(pb.ModelInferRequest(model_name="add"), served, grpc.StatusCode.OK, 0.01, no_metadata)
    for name in ("x1", "x2", "x3"):
        request = pb.ModelInferRequest(model_name=name)
        recorder.finished(request, None, grpc.StatusCode.NOT_FOUND, 0.001, no_metadata)

    def sample(name: str, **labels: str) -> float | None:
        return collector.get_sample_value(name, labels)

    assert sample("serving_requests_total", model="add", version="2", code="OK") == 1
    assert sample("serving_requests_total", model="_unknown", version="_unknown", code="NOT_FOUND") == 3
    assert sample("serving_request_duration_seconds_sum", model="add", version="2") == pytest.approx(0.01)


async def test_access_log_samples_successes_and_keeps_every_failure(
    registry: ModelRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = RequestRecorder(None, registry, sample_rate=0.1, rng=random.Random(7))
    served = ("add", "1")
    with caplog.at_level(logging.INFO, logger="serving.access"):
        for _ in range(2000):
            recorder.finished(
                pb.ModelInferRequest(model_name="add"), served, grpc.StatusCode.OK, 0.001, no_metadata
            )
        for _ in range(20):
            failed = pb.ModelInferRequest(model_name="add", id="r-1")
            recorder.finished(failed, None, grpc.StatusCode.INVALID_ARGUMENT, 0.001, no_metadata)
    ok = [r for r in caplog.records if r.fields["code"] == "OK"]  # type: ignore[attr-defined]
    errors = [r for r in caplog.records if r.fields["code"] != "OK"]  # type: ignore[attr-defined]
    assert 150 <= len(ok) <= 250  # 10 % of 2,000
    assert len(errors) == 20
    assert errors[0].fields == {  # type: ignore[attr-defined]
        "request_id": "r-1",
        "model": "add",
        "version": "_unknown",
        "code": "INVALID_ARGUMENT",
        "latency_ms": 1.0,
    }


async def test_request_id_from_metadata_and_json_fields(
    registry: ModelRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = RequestRecorder(None, registry, sample_rate=1.0)
    with caplog.at_level(logging.INFO, logger="serving.access"):
        recorder.finished(
            pb.ModelInferRequest(model_name="nope"),
            None,
            grpc.StatusCode.NOT_FOUND,
            0.002,
            lambda: [("x-request-id", "abc-123")],
        )
    (record,) = caplog.records
    entry = json.loads(JsonFormatter().format(record))
    assert entry["logger"] == "serving.access"
    assert (entry["request_id"], entry["model"], entry["code"]) == ("abc-123", "'nope'", "NOT_FOUND")
    assert entry["latency_ms"] == 2.0


def test_sample_rate_is_validated(tmp_path: Path) -> None:
    registry = ModelRegistry(ModelRepository(tmp_path), lambda *_: FakeBackend(), lambda *_: [])
    with pytest.raises(ValueError, match="sample rate"):
        RequestRecorder(None, registry, sample_rate=1.5)
