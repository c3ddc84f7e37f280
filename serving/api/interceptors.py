"""`InferenceRequestInterceptor`: admission (serving/api/admission.py) for every call of our services,
and end-to-end timing and final status of every unary ModelInfer call.

Admission: each call of GRPCInferenceService and the admin service (except the probes ServerLive,
ServerReady and ModelReady, which answer the truth while draining) enters the AdmissionGate as soon as
its handler runs, before anything is decoded, and leaves it when its reply is sent. A refused call ends
at once with UNAVAILABLE (draining) or RESOURCE_EXHAUSTED (too many concurrent inference calls); a
ModelInfer whose deadline passed while it waited below our code ends with DEADLINE_EXCEEDED, undecoded.
grpc.health and reflection are not gated: probes keep working and Watch streams end by themselves.

Timing: the ModelInfer handler hands the request, the reply (None on failure), the status code and the
latency to serving.api.request_log.RequestRecorder, refusals included. The code is the one the call ends
with: OK, the code `context.abort` set (serving/api/status.py chose it), CANCELLED when the client went
away (DEADLINE_EXCEEDED when its deadline had passed), UNKNOWN for anything else. ModelStreamInfer
has one status for the whole stream, so the servicer records each streamed request itself through the
same recorder.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from serving.api.admission import AdmissionGate
from serving.api.request_log import RequestRecorder
from serving.api.status import message_of, status_of
from serving.batching.queue import DEADLINE_TEXT
from serving.errors import ServingError
from serving.proto import inference_pb2 as pb

INFERENCE_SERVICE = "/inference.GRPCInferenceService/"
MODEL_INFER = INFERENCE_SERVICE + "ModelInfer"
MODEL_STREAM_INFER = INFERENCE_SERVICE + "ModelStreamInfer"
INFERENCE_CALLS = frozenset({MODEL_INFER, MODEL_STREAM_INFER})
GATED_SERVICES = (INFERENCE_SERVICE, "/serving.admin.")
PROBES = frozenset(INFERENCE_SERVICE + m for m in ("ServerLive", "ServerReady", "ModelReady"))
Behaviour = Callable[[Any, grpc.aio.ServicerContext], Any]


def gated(method: str) -> bool:
    return method.startswith(GATED_SERVICES) and method not in PROBES


class InferenceRequestInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, recorder: RequestRecorder, gate: AdmissionGate | None = None) -> None:
        self._recorder = recorder
        self._gate = gate or AdmissionGate()
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not gated(method):
            return handler
        cached = self._wrapped.get(method)
        if cached is None or cached[0] is not handler:  # the same handler every call
            cached = (handler, self._wrap(method, handler))
            self._wrapped[method] = cached
        return cached[1]

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        inference = method in INFERENCE_CALLS
        codecs = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            behaviour = self._admitted(handler.unary_unary, inference)
            if method == MODEL_INFER:
                behaviour = self._timed(behaviour)
            return grpc.unary_unary_rpc_method_handler(behaviour, **codecs)
        if handler.stream_stream is not None and inspect.isasyncgenfunction(handler.stream_stream):
            stream = self._admitted_stream(handler.stream_stream, inference)
            return grpc.stream_stream_rpc_method_handler(stream, **codecs)
        if handler.unary_stream is not None and inspect.isasyncgenfunction(handler.unary_stream):
            stream = self._admitted_stream(handler.unary_stream, inference)
            return grpc.unary_stream_rpc_method_handler(stream, **codecs)
        return handler  # no such handler among our services

    def _admitted(self, behaviour: Behaviour, inference: bool) -> Behaviour:
        gate = self._gate

        async def admitted(request: Any, context: grpc.aio.ServicerContext) -> Any:
            remaining = context.time_remaining() if inference else None
            if remaining is not None and remaining <= 0:  # waited out its deadline below our code
                await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, DEADLINE_TEXT)
            try:
                gate.enter(inference)
            except ServingError as exc:
                await context.abort(status_of(exc), message_of(exc))
            try:
                return await behaviour(request, context)
            finally:
                gate.leave(inference)

        return admitted

    def _admitted_stream(self, behaviour: Behaviour, inference: bool) -> Behaviour:
        gate = self._gate

        async def admitted(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            try:
                gate.enter(inference)
            except ServingError as exc:
                await context.abort(status_of(exc), message_of(exc))
            try:
                async for reply in behaviour(request, context):
                    yield reply
            finally:
                gate.leave(inference)

        return admitted

    def _timed(self, behaviour: Behaviour) -> Behaviour:
        recorder = self._recorder

        async def timed(request: pb.ModelInferRequest, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            reply: pb.ModelInferResponse | None = None
            code = grpc.StatusCode.UNKNOWN
            try:
                reply = await behaviour(request, context)
                code = context.code() or grpc.StatusCode.OK
                return reply
            except asyncio.CancelledError:  # the client went away, or its deadline passed
                remaining = context.time_remaining()
                expired = remaining is not None and remaining <= 0
                code = grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
                raise
            except BaseException:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            finally:
                ok = code is grpc.StatusCode.OK
                recorder.finished(
                    request,
                    reply if ok else None,
                    code,
                    time.perf_counter() - started,
                    context.invocation_metadata,
                )

        return timed
