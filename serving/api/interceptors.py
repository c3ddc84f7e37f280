"""`InferenceRequestInterceptor`: times every unary ModelInfer call end to end and records its final status.

It wraps the ModelInfer handler (other methods pass through untouched) and hands the request, the reply
(None on failure), the status code and the latency to serving.api.request_log.RequestRecorder. The code
is the one the call ends with: OK, the code `context.abort` set (serving/api/status.py chose it),
CANCELLED when the client went away, UNKNOWN for anything else. ModelStreamInfer has one status for the
whole stream, so the servicer records each streamed request itself through the same recorder.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from serving.api.request_log import RequestRecorder
from serving.proto import inference_pb2 as pb

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
Behaviour = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


class InferenceRequestInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, recorder: RequestRecorder) -> None:
        self._recorder = recorder
        self._wrapped: tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler] | None = None  # (inner, outer)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method != MODEL_INFER or handler.unary_unary is None:
            return handler
        if self._wrapped is None or self._wrapped[0] is not handler:  # the same handler every call
            outer = grpc.unary_unary_rpc_method_handler(
                self._timed(handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
            self._wrapped = (handler, outer)
        return self._wrapped[1]

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
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
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
