"""GRPCInferenceService: KServe v2 plus the Triton extensions tritonclient and perf_analyzer call.

Each RPC converts the request, calls the core (DataPlane / ModelRegistry) and converts the reply;
errors become status codes in serving/api/status.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc

from serving import SERVER_NAME, __version__
from serving.api.codec import decode_request, encode_response
from serving.api.request_log import RequestRecorder
from serving.api.status import grpc_errors, message_of, status_of
from serving.core.dataplane import DataPlane
from serving.lifecycle.control import ModelControl
from serving.lifecycle.registry import ModelRegistry
from serving.lifecycle.version import ModelVersion
from serving.proto import inference_pb2 as pb
from serving.proto import inference_pb2_grpc
from serving.proto import model_config_pb2 as mc
from serving.telemetry.statistics import Duration

ROUTING_KEY_METADATA = "x-routing-key"
EXTENSIONS = ("model_repository", "model_configuration", "statistics", "binary_tensor_data", "parameters")


class InferenceServicer(inference_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(
        self,
        registry: ModelRegistry,
        dataplane: DataPlane,
        ready: asyncio.Event,
        control: ModelControl | None = None,
        *,
        requests: RequestRecorder | None = None,
    ) -> None:
        self._registry = registry
        self._dataplane = dataplane
        self._control = control or ModelControl(registry)
        self._requests = requests  # records each streamed request (unary ones: the interceptor)
        self._ready = ready  # set once the startup load finished; cleared when shutting down

    # ---- health and metadata ------------------------------------------------------------------

    @grpc_errors
    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @grpc_errors
    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._ready.is_set())

    @grpc_errors
    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self._registry.is_ready(request.name, request.version))

    @grpc_errors
    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=__version__, extensions=EXTENSIONS)

    @grpc_errors
    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        version = self._registry.resolve(request.name, request.version)
        spec = version.spec
        model = self._registry.model(request.name)
        reply = pb.ModelMetadataResponse(
            name=spec.name,
            versions=[str(v.version) for v in model.ready_versions()],
            platform=version.platform,
        )
        batch = [-1] if spec.max_batch_size > 0 else []
        for t in spec.inputs:
            reply.inputs.add(name=t.name, datatype=t.datatype, shape=batch + list(t.dims))
        for t in spec.outputs:
            reply.outputs.add(name=t.name, datatype=t.datatype, shape=batch + list(t.dims))
        return reply

    @grpc_errors
    async def ModelConfig(
        self, request: pb.ModelConfigRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelConfigResponse:
        version = self._registry.resolve(request.name, request.version)
        return pb.ModelConfigResponse(config=effective_config(version))

    # ---- inference ----------------------------------------------------------------------------

    @grpc_errors
    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        return await self._infer(request, _deadline(context), _routing_key(context))

    async def _infer(
        self, request: pb.ModelInferRequest, deadline: float | None, routing_key: str = ""
    ) -> pb.ModelInferResponse:
        response = await self._dataplane.infer(decode_request(request, routing_key), deadline)
        return encode_response(response, response.output_datatypes)

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[pb.ModelInferRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Requests of one stream run concurrently; each reply (or its error) is sent when ready."""
        replies: asyncio.Queue[pb.ModelStreamInferResponse | None] = asyncio.Queue()
        tasks: set[asyncio.Task[None]] = set()

        async def run(request: pb.ModelInferRequest) -> None:
            started, code = time.perf_counter(), grpc.StatusCode.OK
            try:
                reply = pb.ModelStreamInferResponse(
                    infer_response=await self._infer(request, _deadline(context), _routing_key(context))
                )
            except Exception as exc:
                reply = pb.ModelStreamInferResponse(
                    error_message=message_of(exc), infer_response=pb.ModelInferResponse(id=request.id)
                )
                code = status_of(exc)
            if self._requests is not None:
                elapsed = time.perf_counter() - started
                self._requests.finished(
                    request, reply.infer_response, code, elapsed, context.invocation_metadata
                )
            await replies.put(reply)

        async def read() -> None:
            async for request in request_iterator:
                task = asyncio.create_task(run(request))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            while tasks:
                await asyncio.gather(*list(tasks))
            await replies.put(None)

        reader = asyncio.create_task(read())
        try:
            while (reply := await replies.get()) is not None:
                yield reply
        finally:
            reader.cancel()
            for task in list(tasks):
                task.cancel()

    # ---- statistics and repository ------------------------------------------------------------

    @grpc_errors
    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelStatisticsResponse:
        if request.name:
            model = self._registry.model(request.name)
            versions = list(model.versions.values())
            if request.version:
                versions = [self._registry.resolve(request.name, request.version)]
        else:
            versions = self._registry.all_versions()
        reply = pb.ModelStatisticsResponse()
        for version in sorted(versions, key=lambda v: (v.name, v.version)):
            reply.model_stats.append(statistics(version))
        return reply

    @grpc_errors
    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryIndexResponse:
        reply = pb.RepositoryIndexResponse()
        for entry in self._registry.index():
            if request.ready and entry.state != "READY":
                continue
            reply.models.add(name=entry.name, version=entry.version, state=entry.state, reason=entry.reason)
        return reply

    @grpc_errors
    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryModelLoadResponse:
        # Parameters such as Triton's `config` override are not supported; unknown ones are ignored.
        await self._control.request_load(request.model_name)
        return pb.RepositoryModelLoadResponse()

    @grpc_errors
    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryModelUnloadResponse:
        await self._control.request_unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()


def _routing_key(context: grpc.aio.ServicerContext) -> str:
    """The `x-routing-key` metadata (sticky routing), or ""."""
    for key, value in context.invocation_metadata() or ():
        if key == ROUTING_KEY_METADATA and isinstance(value, str):
            return value
    return ""


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


def effective_config(version: ModelVersion) -> mc.ModelConfig:
    """The config as it runs: platform and instance placement resolved (KIND_AUTO → CPU or GPU)."""
    config = mc.ModelConfig()
    config.CopyFrom(version.spec.config)
    config.platform = version.platform
    config.backend = ""
    del config.instance_group[:]
    for device in sorted({p.device for p in version.placements}):
        count = sum(1 for p in version.placements if p.device == device)
        group = config.instance_group.add(name=f"{version.name}_{device.replace(':', '_')}", count=count)
        if device.startswith("cuda"):
            group.kind = mc.ModelInstanceGroup.KIND_GPU
            group.gpus.append(int(device.split(":")[1]))
        else:
            group.kind = mc.ModelInstanceGroup.KIND_CPU
    return config


def _duration(d: Duration) -> pb.StatisticDuration:
    return pb.StatisticDuration(count=d.count, ns=d.ns)


def statistics(version: ModelVersion) -> pb.ModelStatistics:
    s = version.stats.snapshot()
    reply = pb.ModelStatistics(
        name=version.name,
        version=str(version.version),
        last_inference=s.last_inference_ms,
        inference_count=s.inference_count,
        execution_count=s.execution_count,
        inference_stats=pb.InferStatistics(
            success=_duration(s.success),
            fail=_duration(s.fail),
            queue=_duration(s.queue),
            compute_input=_duration(s.compute_input),
            compute_infer=_duration(s.compute_infer),
            compute_output=_duration(s.compute_output),
        ),
    )
    for size, b in s.batch_stats.items():
        reply.batch_stats.add(
            batch_size=size,
            compute_input=_duration(b.compute_input),
            compute_infer=_duration(b.compute_infer),
            compute_output=_duration(b.compute_output),
        )
    return reply
