"""`Forwarder`: a front-end passes every RPC it does not serve itself, as raw bytes, to the model worker's
gRPC server on a unix socket (metadata and deadline kept; the worker's status and trailing metadata
returned as they are). So health, metadata, statistics, repository, admin, reflection and shared-memory
registration calls are answered by the one process that holds the models, whichever front-end took them.
Admission (the front-end's gate) comes first, then the admin guard for a protected call (the client's
address is only known here): the single-process server's own `admitted` (serving/api/calls.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from serving.api.admission import AdmissionGate
from serving.api.auth import AdminGuard
from serving.api.calls import MODEL_STREAM_INFER, CallFacts, admitted

STREAM_STREAM = frozenset(
    {
        MODEL_STREAM_INFER,
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    }
)
UNARY_STREAM = frozenset({"/grpc.health.v1.Health/Watch"})
_NOT_FORWARDED = ("user-agent", "te", "content-type", "grpc-")


def forwarded_metadata(context: grpc.aio.ServicerContext) -> tuple[tuple[str, Any], ...]:
    return tuple(
        (key, value)
        for key, value in context.invocation_metadata() or ()
        if not key.startswith(":") and not key.startswith(_NOT_FORWARDED)
    )


class Forwarder:
    def __init__(self, channel: grpc.aio.Channel, gate: AdmissionGate, guard: AdminGuard) -> None:
        self._channel = channel
        self._gate = gate
        self._guard = guard

    def handler(self, method: str) -> grpc.RpcMethodHandler:
        if method in STREAM_STREAM:
            return grpc.stream_stream_rpc_method_handler(self._stream(method, True))
        if method in UNARY_STREAM:
            return grpc.unary_stream_rpc_method_handler(self._stream(method, False))
        return grpc.unary_unary_rpc_method_handler(self._unary(method))

    async def call(self, method: str, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        """One unary call to the worker, its failure turned into this call's status."""
        remaining = context.time_remaining()
        try:
            reply: bytes = await self._channel.unary_unary(method)(
                request, metadata=forwarded_metadata(context), timeout=remaining
            )
        except grpc.aio.AioRpcError as exc:
            await context.abort(exc.code(), exc.details() or "", exc.trailing_metadata() or ())
        return reply

    def _unary(self, method: str) -> Any:
        call = CallFacts.of(method)

        async def forward(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            async with admitted(self._gate, self._guard, call, context):
                return await self.call(method, request, context)

        return forward

    def _stream(self, method: str, client_streams: bool) -> Any:
        channel, gate, guard, facts = self._channel, self._gate, self._guard, CallFacts.of(method)

        async def forward(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
            # admission, and the admin guard should a protected method ever stream (none does today)
            async with admitted(gate, guard, facts, context):
                multicallable: Any = (
                    channel.stream_stream(method) if client_streams else channel.unary_stream(method)
                )
                call = multicallable(
                    request, metadata=forwarded_metadata(context), timeout=context.time_remaining()
                )
                try:
                    async for reply in call:
                        yield reply
                except grpc.aio.AioRpcError as exc:
                    await context.abort(exc.code(), exc.details() or "", exc.trailing_metadata() or ())

        return forward
