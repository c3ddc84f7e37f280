"""A KServe v2 gRPC server that does no work: the yardstick for the generator's own ceiling.

It answers every model name. ModelMetadata describes one input ``INPUT0`` FP32 [-1, 16] and one
output; ModelInfer takes the request bytes unparsed and returns a pre-serialised reply. Optional
behaviour, for testing the generator's judgement rather than the server:

- ``versions``: weights per version (``{"1": 90, "2": 10}``); with ``sticky`` the version follows a
  hash of the ``x-routing-key`` header, otherwise a random draw. A pinned request gets its version.
- ``delay_s``: every reply waits this long.
- ``stall_at_s`` / ``stall_s``: once, starting that long after the first request, the server stalls:
  requests that arrive during the stall are answered only when it ends.
- RepositoryModelLoad / Unload succeed and are counted.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc

from loadtests.wire import ROUTING_KEY_HEADER, channel_options, model_version_of
from serving.proto import inference_pb2 as pb
from serving.proto import inference_pb2_grpc as pb_grpc

SERVICE = "inference.GRPCInferenceService"
INPUT = pb.ModelMetadataResponse.TensorMetadata(name="INPUT0", datatype="FP32", shape=[-1, 16])
OUTPUT = pb.ModelMetadataResponse.TensorMetadata(name="OUTPUT0", datatype="FP32", shape=[-1, 1])


@dataclass(frozen=True)
class NoopConfig:
    versions: Mapping[str, float] = field(default_factory=lambda: {"1": 1.0})
    sticky: bool = False
    delay_s: float = 0.0
    stall_at_s: float | None = None
    stall_s: float = 0.0


def _reply(version: str) -> bytes:
    reply = pb.ModelInferResponse(model_name="noop", model_version=version)
    reply.outputs.add(name="OUTPUT0", datatype="FP32", shape=[1, 1])
    reply.raw_output_contents.append(b"\x00\x00\x00\x00")
    return reply.SerializeToString()


class NoopServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, config: NoopConfig) -> None:
        self._config = config
        total = sum(config.versions.values())
        self._versions = list(config.versions)
        cumulative, running = [], 0.0
        for weight in config.versions.values():
            running += weight / total
            cumulative.append(running)
        self._cumulative = cumulative
        self._replies = {v: _reply(v) for v in self._versions}
        self._first_request: float | None = None
        self.served: dict[str, int] = {v: 0 for v in self._versions}
        self.repository_calls: list[tuple[str, str]] = []

    def _choose(self, context: grpc.aio.ServicerContext) -> str:
        if self._config.sticky:
            key = dict(context.invocation_metadata() or ()).get(ROUTING_KEY_HEADER, "")
            digest = hashlib.blake2b(str(key).encode(), digest_size=8).digest()
            draw = int.from_bytes(digest, "big") / 2**64
        else:
            draw = random.random()
        for version, edge in zip(self._versions, self._cumulative, strict=True):
            if draw < edge:
                return version
        return self._versions[-1]

    async def _wait(self) -> None:
        now = time.monotonic()
        if self._first_request is None:
            self._first_request = now
        if self._config.stall_at_s is not None:
            stall_start = self._first_request + self._config.stall_at_s
            stall_end = stall_start + self._config.stall_s
            if stall_start <= now < stall_end:
                await asyncio.sleep(stall_end - now)
        if self._config.delay_s > 0:
            await asyncio.sleep(self._config.delay_s)

    async def infer_raw(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        if self._config.delay_s > 0 or self._config.stall_at_s is not None:
            await self._wait()
        pinned = model_version_of(request)
        version = pinned if pinned in self._replies else self._choose(context)
        self.served[version] += 1
        return self._replies[version]

    async def ServerLive(self, request: Any, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=True)

    async def ModelReady(self, request: Any, context: Any) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=True)

    async def ServerMetadata(self, request: Any, context: Any) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name="loadtests-noop", version="1", extensions=["model_repository"])

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        return pb.ModelMetadataResponse(
            name=request.name, versions=self._versions, platform="noop", inputs=[INPUT], outputs=[OUTPUT]
        )

    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Any
    ) -> pb.RepositoryModelLoadResponse:
        self.repository_calls.append(("load", request.model_name))
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Any
    ) -> pb.RepositoryModelUnloadResponse:
        self.repository_calls.append(("unload", request.model_name))
        return pb.RepositoryModelUnloadResponse()


class _HandlerCapture:
    """Stands in for a server to collect the generated code's method handlers."""

    def __init__(self) -> None:
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        self.handlers = dict(handlers)


def _generated_handlers(servicer: NoopServicer) -> dict[str, grpc.RpcMethodHandler]:
    capture = _HandlerCapture()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, capture)  # type: ignore[no-untyped-call]
    return capture.handlers


async def start_noop_server(
    config: NoopConfig, host: str = "127.0.0.1", port: int = 0
) -> tuple[grpc.aio.Server, int, NoopServicer]:
    """Start (and return) the server, its bound port and its servicer; stop with ``server.stop(0)``."""
    servicer = NoopServicer(config)
    server = grpc.aio.server(options=channel_options())
    handlers = _generated_handlers(servicer)
    handlers["ModelInfer"] = grpc.unary_unary_rpc_method_handler(servicer.infer_raw)  # bytes in, bytes out
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"could not bind {host}:{port}")
    await server.start()
    return server, bound, servicer
