"""`Forwarder`: a front-end passes every RPC it does not serve itself, as raw bytes, to the model worker's
gRPC server on a unix socket (metadata and deadline kept; the worker's status and trailing metadata
returned as they are). So health, metadata, statistics, repository, admin, reflection and shared-memory
registration calls are answered by the one process that holds the models, whichever front-end took them.
Admission (the front-end's gate) comes first, then the admin guard for a protected call (the client's
address is only known here), as in the single-process server (serving/api/calls.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from serving.api.admission import AdmissionGate
from serving.api.auth import AdminGuard, is_protected
from serving.api.calls import INFERENCE_CALLS, MODEL_STREAM_INFER, gated
from serving.api.status import message_of, status_of
from serving.errors import ServingError

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
        inference, admitted, protected = method in INFERENCE_CALLS, gated(method), is_protected(method)

        async def forward(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            if admitted:
                await admit(self._gate, inference, context)
            try:
                if protected:
                    await self._check_admin(method, context)
                return await self.call(method, request, context)
            finally:
                if admitted:
                    self._gate.leave(inference)

        return forward

    async def _check_admin(self, method: str, context: grpc.aio.ServicerContext) -> None:
        """The admin guard (the token, or without one a loopback peer), or end the call UNAUTHENTICATED."""
        try:
            self._guard.check_call(method, context.invocation_metadata(), context.peer)
        except ServingError as exc:
            await context.abort(status_of(exc), message_of(exc))

    def _stream(self, method: str, client_streams: bool) -> Any:
        channel, gate = self._channel, self._gate
        inference, protected = method == MODEL_STREAM_INFER, is_protected(method)

        async def forward(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
            if gated(method):
                await admit(gate, inference, context)
            try:
                if protected:  # no protected method streams today; guarded all the same
                    await self._check_admin(method, context)
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
            finally:
                if gated(method):
                    gate.leave(inference)

        return forward


async def admit(gate: AdmissionGate, inference: bool, context: grpc.aio.ServicerContext) -> None:
    """Enter the front-end's admission gate, or end the call (UNAVAILABLE while draining, else
    RESOURCE_EXHAUSTED)."""
    try:
        gate.enter(inference)
    except ServingError as exc:
        await context.abort(status_of(exc), message_of(exc))
