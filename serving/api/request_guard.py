"""GRPCInferenceService's handlers, registered so that no client mistake reaches the servicer unchecked.

- A message gRPC cannot parse as the method's request (corrupt wire format, a string field that is not
  UTF-8) would make protobuf raise inside gRPC, before any handler runs, and the client would get
  UNKNOWN. Here the deserializer turns it into a `MalformedRequest`, which the handler refuses with
  INVALID_ARGUMENT (the status and the reason), and the server carries on.
- A ModelInfer request is checked for its counts and names (serving/api/codec.check_names) before any
  tensor is decoded: more than `max_inputs` inputs, outputs or raw contents, or input names the loaded
  model does not have, are refused at once, so decoding cannot hold the event loop for long.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message

from serving.api.codec import check_names
from serving.api.status import message_of, status_of
from serving.errors import InvalidInput
from serving.proto import inference_pb2
from serving.quoting import clip

SERVICE = "inference.GRPCInferenceService"
InputNames = Callable[[str], Collection[str] | None]  # a loaded model's input names; None: not loaded


@dataclass(frozen=True)
class MalformedRequest:
    """What the deserializer hands on instead of a message it could not parse. The fields the access
    log reads (serving/api/request_log.py) are present and empty."""

    reason: str
    model_name: str = ""
    model_version: str = ""
    id: str = ""


def safe_deserializer(message_type: type[Message]) -> Callable[[bytes], Any]:
    name = message_type.DESCRIPTOR.full_name

    def deserialize(data: bytes) -> Any:
        try:
            return message_type.FromString(data)
        except DecodeError as exc:
            return MalformedRequest(f"the request is not a valid {name}: {clip(str(exc))}")

    return deserialize


@dataclass(frozen=True)
class InferGuard:
    """The checks every ModelInfer request passes before the servicer decodes it."""

    max_inputs: int
    input_names: InputNames

    def check(self, request: Any) -> None:
        if isinstance(request, MalformedRequest):
            raise InvalidInput(request.reason)
        if isinstance(request, inference_pb2.ModelInferRequest):
            check_names(request, self.max_inputs, self.input_names(request.model_name))


def add_inference_service(servicer: Any, server: grpc.aio.Server, guard: InferGuard) -> None:
    """Register every method of GRPCInferenceService on `server`, as the generated code does, but with
    `safe_deserializer` and `guard` in front of the servicer."""
    service = inference_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for method in service.methods:
        request_type = getattr(inference_pb2, method.input_type.name)
        response_type = getattr(inference_pb2, method.output_type.name)
        behaviour = getattr(servicer, method.name)
        options: dict[str, Any] = {
            "request_deserializer": safe_deserializer(request_type),
            "response_serializer": response_type.SerializeToString,
        }
        if method.client_streaming:
            handler = grpc.stream_stream_rpc_method_handler(_streamed(behaviour, guard), **options)
        else:
            handler = grpc.unary_unary_rpc_method_handler(_unary(behaviour, guard), **options)
        handlers[method.name] = handler
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)


Unary = Callable[[Any, grpc.aio.ServicerContext], Any]


def _unary(behaviour: Unary, guard: InferGuard) -> Unary:
    async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            guard.check(request)
        except InvalidInput as exc:
            await context.abort(status_of(exc), message_of(exc))
        return await behaviour(request, context)

    return handle


def _streamed(
    behaviour: Callable[[AsyncIterator[Any], grpc.aio.ServicerContext], AsyncIterator[Any]], guard: InferGuard
) -> Callable[[AsyncIterator[Any], grpc.aio.ServicerContext], AsyncIterator[Any]]:
    """A stream ends at its first request that fails the guard: the replies to the requests before it
    are sent, then the call ends with that request's status."""

    async def handle(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        refused: list[InvalidInput] = []

        async def checked() -> AsyncIterator[Any]:
            async for request in requests:
                try:
                    guard.check(request)
                except InvalidInput as exc:
                    refused.append(exc)
                    return
                yield request

        async for reply in behaviour(checked(), context):
            yield reply
        if refused:
            await context.abort(status_of(refused[0]), message_of(refused[0]))

    return handle
