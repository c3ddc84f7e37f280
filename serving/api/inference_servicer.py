"""GRPCInferenceService: KServe v2 plus the Triton extensions tritonclient and perf_analyzer call.

Each RPC converts the request (serving/api/codec.py, model_codec.py), calls the core facade
(serving/core/service.py) and converts the reply; errors become status codes in serving/api/status.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc

from serving.api import load_override, model_codec
from serving.api.codec import decode_request, encode_response, shared_outputs
from serving.api.request_log import RequestRecorder
from serving.api.status import grpc_errors, message_of, status_of
from serving.core.service import InferenceService
from serving.proto import inference_pb2 as pb
from serving.proto import inference_pb2_grpc


class InferenceServicer(inference_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, service: InferenceService, *, requests: RequestRecorder | None = None) -> None:
        self._service = service
        self._requests = requests  # records each streamed request (unary ones: serving/api/calls.py)

    # ---- health and metadata ------------------------------------------------------------------

    @grpc_errors
    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self._service.live())

    @grpc_errors
    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._service.ready())

    @grpc_errors
    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self._service.model_ready(request.name, request.version))

    @grpc_errors
    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        return model_codec.server_metadata(self._service.server_info())

    @grpc_errors
    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        return model_codec.model_metadata(self._service.model_info(request.name, request.version))

    @grpc_errors
    async def ModelConfig(
        self, request: pb.ModelConfigRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelConfigResponse:
        version = self._service.model_version(request.name, request.version)
        return pb.ModelConfigResponse(config=model_codec.effective_config(version))

    # ---- inference ----------------------------------------------------------------------------

    async def infer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> tuple[pb.ModelInferResponse, tuple[str, str]]:
        """ModelInfer (registered by serving/api/calls.py, which maps its errors to status codes): the
        reply, and the (model, version) that answered."""
        regions = self._service.shared_memory
        decoded = decode_request(
            request, context.invocation_metadata() or (), context.time_remaining(), regions
        )
        shared = shared_outputs(request, regions)  # checked before the model runs
        response = await self._service.infer(decoded)
        return encode_response(response, shared), (response.model_name, response.model_version)

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[pb.ModelInferRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Requests of one stream run concurrently; each reply (or its error) is sent when ready."""
        replies: asyncio.Queue[pb.ModelStreamInferResponse | None] = asyncio.Queue()
        tasks: set[asyncio.Task[None]] = set()

        async def run(request: pb.ModelInferRequest) -> None:
            started, code, served = time.perf_counter(), grpc.StatusCode.OK, None
            try:
                response, served = await self.infer(request, context)
                reply = pb.ModelStreamInferResponse(infer_response=response)
            except Exception as exc:
                reply = pb.ModelStreamInferResponse(
                    error_message=message_of(exc), infer_response=pb.ModelInferResponse(id=request.id)
                )
                code = status_of(exc)
            if self._requests is not None:
                elapsed = time.perf_counter() - started
                self._requests.finished(request, served, code, elapsed, context.invocation_metadata)
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
        return model_codec.model_statistics(self._service.statistics(request.name, request.version))

    @grpc_errors
    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryIndexResponse:
        return model_codec.repository_index(self._service.repository_index(request.ready))

    @grpc_errors
    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryModelLoadResponse:
        # Triton's `config` and `file:<path>` overrides (serving/lifecycle/override.py); others ignored.
        await self._service.load(request.model_name, load_override.from_grpc(request.parameters))
        return pb.RepositoryModelLoadResponse()

    @grpc_errors
    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryModelUnloadResponse:
        await self._service.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    # ---- shared memory (Triton's extension) ---------------------------------------------------

    @grpc_errors
    async def SystemSharedMemoryRegister(
        self, request: pb.SystemSharedMemoryRegisterRequest, context: grpc.aio.ServicerContext
    ) -> pb.SystemSharedMemoryRegisterResponse:
        self._service.shared_memory.register_system(
            request.name, request.key, request.offset, request.byte_size
        )
        return pb.SystemSharedMemoryRegisterResponse()

    @grpc_errors
    async def SystemSharedMemoryUnregister(
        self, request: pb.SystemSharedMemoryUnregisterRequest, context: grpc.aio.ServicerContext
    ) -> pb.SystemSharedMemoryUnregisterResponse:
        self._service.shared_memory.unregister_system(request.name)
        return pb.SystemSharedMemoryUnregisterResponse()

    @grpc_errors
    async def SystemSharedMemoryStatus(
        self, request: pb.SystemSharedMemoryStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.SystemSharedMemoryStatusResponse:
        reply = pb.SystemSharedMemoryStatusResponse()
        for region in self._service.shared_memory.system_status(request.name):
            reply.regions[region.name].CopyFrom(
                pb.SystemSharedMemoryStatusResponse.RegionStatus(
                    name=region.name, key=region.key, offset=region.offset, byte_size=region.byte_size
                )
            )
        return reply

    @grpc_errors
    async def CudaSharedMemoryRegister(
        self, request: pb.CudaSharedMemoryRegisterRequest, context: grpc.aio.ServicerContext
    ) -> pb.CudaSharedMemoryRegisterResponse:
        self._service.shared_memory.register_cuda(
            request.name, request.raw_handle, request.device_id, request.byte_size
        )
        return pb.CudaSharedMemoryRegisterResponse()

    @grpc_errors
    async def CudaSharedMemoryUnregister(
        self, request: pb.CudaSharedMemoryUnregisterRequest, context: grpc.aio.ServicerContext
    ) -> pb.CudaSharedMemoryUnregisterResponse:
        self._service.shared_memory.unregister_cuda(request.name)
        return pb.CudaSharedMemoryUnregisterResponse()

    @grpc_errors
    async def CudaSharedMemoryStatus(
        self, request: pb.CudaSharedMemoryStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.CudaSharedMemoryStatusResponse:
        reply = pb.CudaSharedMemoryStatusResponse()
        for region in self._service.shared_memory.cuda_status(request.name):
            reply.regions[region.name].CopyFrom(
                pb.CudaSharedMemoryStatusResponse.RegionStatus(
                    name=region.name, device_id=region.device_id, byte_size=region.byte_size
                )
            )
        return reply
