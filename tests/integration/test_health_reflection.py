"""grpc.health.v1 (overall and per model) and server reflection, through real gRPC clients.

The health client is grpcio-health-checking's stub, what grpc_health_probe and Kubernetes gRPC probes
call; reflection is read with grpcio-reflection's ProtoReflectionDescriptorDatabase, the way grpcurl does.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import tritonclient.grpc as grpcclient
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from tests.model_factory import write_add_repository
from tests.servers import ServerProcess, start_server

pytestmark = pytest.mark.integration

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def check(channel: grpc.Channel, service: str) -> int:
    reply = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=service), timeout=10
    )
    return int(reply.status)


@pytest.fixture
def add_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server of its own: these tests unload its model and stop it."""
    server = start_server(write_add_repository(tmp_path / "repository"), tmp_path / "server.log")
    yield server
    server.stop()


def test_health_overall_and_per_model(live_server: ServerProcess) -> None:
    with grpc.insecure_channel(live_server.grpc_address) as channel:
        assert check(channel, "") == SERVING
        assert check(channel, "inference.GRPCInferenceService") == SERVING
        assert check(channel, "digits") == SERVING
        assert check(channel, "resnet50") == SERVING
        with pytest.raises(grpc.RpcError) as caught:
            check(channel, "no-such-model")
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND  # the health protocol's answer
        listed = health_pb2_grpc.HealthStub(channel).List(health_pb2.HealthListRequest(), timeout=10)
        assert {name: int(s.status) for name, s in listed.statuses.items()} == {
            "": SERVING,
            "inference.GRPCInferenceService": SERVING,
            "digits": SERVING,
            "resnet50": SERVING,
        }


def test_model_health_follows_unload_and_load(add_server: ServerProcess) -> None:
    client = grpcclient.InferenceServerClient(add_server.grpc_address)
    with grpc.insecure_channel(add_server.grpc_address) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service="add"), timeout=30
        )
        assert next(watch).status == SERVING
        client.unload_model("add")
        assert next(watch).status == NOT_SERVING  # in the repository, no READY version
        assert check(channel, "add") == NOT_SERVING
        assert check(channel, "") == SERVING  # the server itself still serves
        client.load_model("add")
        assert next(watch).status == SERVING
        watch.cancel()


def test_watch_reports_shutdown_and_ends(add_server: ServerProcess) -> None:
    with grpc.insecure_channel(add_server.grpc_address) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=""), timeout=30
        )
        assert next(watch).status == SERVING
        started = time.monotonic()
        add_server.process.terminate()  # SIGTERM: drain and stop
        try:
            statuses = [reply.status for reply in watch]
        except grpc.RpcError as exc:
            pytest.fail(
                f"the watch failed ({exc.code()}: {exc.details()}) instead of ending:\n{add_server.log()[-3000:]}"
            )
        # NOT_SERVING, then the stream ends, so it cannot hold up the grace period (30 s)
        assert statuses == [NOT_SERVING], add_server.log()[-3000:]
    assert add_server.process.wait(20) == 0, add_server.log()[-3000:]
    assert time.monotonic() - started < 10, add_server.log()[-3000:]


def test_reflection_lists_and_describes(live_server: ServerProcess) -> None:
    with grpc.insecure_channel(live_server.grpc_address) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        assert {
            "inference.GRPCInferenceService",
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
        } <= services
        pool = DescriptorPool(database)
        service = pool.FindServiceByName("inference.GRPCInferenceService")
        methods = {m.name for m in service.methods}
        assert {"ModelInfer", "ModelStreamInfer", "ModelStatistics", "ServerReady"} <= methods
        request = pool.FindMessageTypeByName("inference.ModelInferRequest")
        fields = {f.name for f in request.fields}
        assert {"model_name", "model_version", "id", "inputs", "raw_input_contents"} <= fields
        health = pool.FindServiceByName("grpc.health.v1.Health")
        assert {m.name for m in health.methods} >= {"Check", "Watch"}
