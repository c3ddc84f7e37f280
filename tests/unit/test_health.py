"""serving.api.health statuses from the registry, and the reflection pool that spans both descriptor pools."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
from grpc_health.v1 import health_pb2

from serving.api.health import HEALTH_SERVICE, NOT_SERVING, SERVING, HealthServicer
from serving.api.reflection import REFLECTION_SERVICE, reflection_pool
from serving.backends.base import Placement
from serving.lifecycle.registry import ModelRegistry
from serving.lifecycle.repository import ModelRepository
from serving.proto import inference_pb2
from serving.types import Array, TensorMap
from tests.model_factory import write_add_repository
from tests.unit.fake_backend import FakeBackend


def add_one(inputs: TensorMap) -> dict[str, Array]:
    return {"y": np.asarray(inputs["x"]) + 1}


async def test_statuses_follow_readiness_loads_and_shutdown(tmp_path: Path) -> None:
    write_add_repository(tmp_path, name="add")
    write_add_repository(tmp_path, name="other")
    registry = ModelRegistry(
        ModelRepository(tmp_path), lambda *_: FakeBackend(add_one), lambda spec, source: [Placement("cpu")]
    )
    ready = asyncio.Event()
    health = HealthServicer(registry, ready)
    assert health.status("") == NOT_SERVING  # still loading
    await registry.load("add")
    ready.set()
    assert health.status("") == SERVING
    assert health.status("inference.GRPCInferenceService") == SERVING
    assert health.status("add") == SERVING
    assert health.status("other") == NOT_SERVING  # in the repository, not loaded
    assert health.status("nothing") is None
    assert health.services() == ["", "inference.GRPCInferenceService", "add", "other"]
    await registry.unload("add")
    assert health.status("add") == NOT_SERVING
    await registry.load("add")
    health.begin_shutdown()
    assert health.status("") == NOT_SERVING
    assert health.status("add") == NOT_SERVING


def test_reflection_pool_resolves_our_and_grpc_services() -> None:
    service = inference_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]

    pool = reflection_pool([service.file, HEALTH_SERVICE.file, REFLECTION_SERVICE.file])
    assert pool.FindServiceByName("inference.GRPCInferenceService").methods_by_name["ModelInfer"]
    assert pool.FindMessageTypeByName("inference.ModelInferRequest").fields_by_name["raw_input_contents"]
    assert pool.FindServiceByName("grpc.health.v1.Health").methods_by_name["Check"]
    assert pool.FindServiceByName("grpc.reflection.v1alpha.ServerReflection")


async def test_watch_sends_not_serving_when_shutdown_begins_while_a_reply_is_being_sent(tmp_path: Path) -> None:
    """The race CI hit: shutdown began while the Watch waited at its `yield` (SERVING still being sent);
    the stream must still send NOT_SERVING before it ends, never end silently."""
    write_add_repository(tmp_path, name="add")
    registry = ModelRegistry(
        ModelRepository(tmp_path), lambda *_: FakeBackend(add_one), lambda spec, source: [Placement("cpu")]
    )
    ready = asyncio.Event()
    ready.set()
    health = HealthServicer(registry, ready, watch_interval_s=60)
    stream = health.Watch(health_pb2.HealthCheckRequest(service=""), None)  # Watch reads no context
    assert (await anext(stream)).status == SERVING
    health.begin_shutdown()  # while the generator is suspended at its yield
    assert [reply.status async for reply in stream] == [NOT_SERVING]
