"""What every call of our gRPC services passes, wrapped once around each handler when it is registered.

    admission (serving/api/admission.py) → admin guard (serving/api/auth.py) → request guard
    (serving/api/request_guard.py) → the servicer; ModelInfer is also timed and recorded.

This used to be two grpc.aio server interceptors. An interceptor runs per call, as coroutines that look
the handler up again and wrap it; wrapping each handler once at registration does the same checks in
the same order with none of that, and ModelInfer, the hot path, runs as one frame (docs/performance.md
has the measured gain). grpc.health and reflection are registered elsewhere and pass none of this.

Admission: each call of GRPCInferenceService and the admin service (except the probes ServerLive,
ServerReady and ModelReady, which answer the truth while draining) enters the AdmissionGate as soon as
its handler runs, before anything is decoded, and leaves it when its reply is ready. A refused call ends
at once with UNAVAILABLE (draining) or RESOURCE_EXHAUSTED (too many concurrent inference calls); a
ModelInfer whose deadline passed while it waited below our code ends with DEADLINE_EXCEEDED, undecoded.

Admin guard: protected methods (the admin service, RepositoryModelLoad/Unload) need the admin token in
the call's metadata, or, when the server has none, a loopback peer; a refusal is UNAUTHENTICATED.

Timing: ModelInfer hands the request, the (model, version) that answered (None on failure), the status
code and the latency to serving.api.request_log.RequestRecorder, refusals included. The code is the one
the call ends with: OK, the code of the error (serving/api/status.py), CANCELLED when the client went
away (DEADLINE_EXCEEDED when its deadline had passed), INTERNAL for anything unexpected.
ModelStreamInfer has one status for the whole stream, so the servicer records each streamed request
itself through the same recorder.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import grpc

from serving.api.admission import AdmissionGate
from serving.api.auth import AdminGuard, is_protected
from serving.api.request_guard import InferGuard, safe_deserializer
from serving.api.request_log import RequestRecorder
from serving.api.status import message_of, status_of
from serving.batching.queue import DEADLINE_TEXT
from serving.errors import DeadlineExceeded, InvalidInput, ServingError

log = logging.getLogger("serving.api")

INFERENCE_SERVICE = "/inference.GRPCInferenceService/"
MODEL_INFER = INFERENCE_SERVICE + "ModelInfer"
MODEL_STREAM_INFER = INFERENCE_SERVICE + "ModelStreamInfer"
INFERENCE_CALLS = frozenset({MODEL_INFER, MODEL_STREAM_INFER})
GATED_SERVICES = (INFERENCE_SERVICE, "/serving.admin.")
PROBES = frozenset(INFERENCE_SERVICE + m for m in ("ServerLive", "ServerReady", "ModelReady"))

Unary = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
Streamed = Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]]
# ModelInfer's servicer side: (request, context) → (reply, (model, version) that answered)
Infer = Callable[[Any, grpc.aio.ServicerContext], Awaitable[tuple[Any, tuple[str, str]]]]


def gated(method: str) -> bool:
    """Whether calls of `method` enter the admission gate: our services' calls, but the probes."""
    return method.startswith(GATED_SERVICES) and method not in PROBES


@dataclass(frozen=True)
class CallFacts:
    """What the checks need to know of a method, worked out once when its handler is made."""

    method: str
    admitted: bool  # enters the admission gate
    inference: bool  # counts against the concurrent inference calls
    protected: bool  # an admin call: the admin guard applies

    @classmethod
    def of(cls, method: str) -> CallFacts:
        return cls(method, gated(method), method in INFERENCE_CALLS, is_protected(method))


@contextlib.asynccontextmanager
async def admitted(
    gate: AdmissionGate, admin: AdminGuard, call: CallFacts, context: grpc.aio.ServicerContext
) -> AsyncIterator[None]:
    """For the body's length: inside the gate (when the method is gated), past the admin guard (when
    protected). A refusal aborts the call with its status, the gate left again; so does the body's end.
    The front-ends' forwarded calls pass the same (serving/frontends/forward.py)."""
    if call.admitted:
        try:
            gate.enter(call.inference)
        except ServingError as exc:
            await context.abort(status_of(exc), message_of(exc))
    try:
        if call.protected:
            try:
                admin.check_call(call.method, context.invocation_metadata(), context.peer)
            except ServingError as exc:
                await context.abort(status_of(exc), message_of(exc))
        yield
    finally:
        if call.admitted:
            gate.leave(call.inference)


@dataclass(frozen=True)
class CallPolicy:
    """The checks of one gRPC server's calls (the gate is shared with HTTP; see serving/server.py)."""

    gate: AdmissionGate
    admin: AdminGuard
    infer_guard: InferGuard
    requests: RequestRecorder

    def register(self, servicer: Any, server: grpc.aio.Server, module: ModuleType, name: str) -> None:
        """Register every method of the service `name` of the generated `module` (e.g. inference_pb2,
        "GRPCInferenceService") on `server`, as the generated code does, with `safe_deserializer` and
        these checks in front of the servicer. ModelInfer takes `servicer.infer` (see `Infer`)."""
        service = module.DESCRIPTOR.services_by_name[name]
        handlers: dict[str, grpc.RpcMethodHandler] = {}
        for method in service.methods:
            full = f"/{service.full_name}/{method.name}"
            options: dict[str, Any] = {
                "request_deserializer": safe_deserializer(
                    getattr(module, method.input_type.name), self.infer_guard.max_inputs
                ),
                "response_serializer": getattr(module, method.output_type.name).SerializeToString,
            }
            if full == MODEL_INFER:
                handler = grpc.unary_unary_rpc_method_handler(self._model_infer(servicer.infer), **options)
            elif method.client_streaming or method.server_streaming:
                behaviour = self._streamed(full, getattr(servicer, method.name))
                handler = grpc.stream_stream_rpc_method_handler(behaviour, **options)
            else:
                handler = grpc.unary_unary_rpc_method_handler(
                    self._unary(full, getattr(servicer, method.name)), **options
                )
            handlers[method.name] = handler
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
        server.add_registered_method_handlers(service.full_name, handlers)

    # ---- ModelInfer: one frame -----------------------------------------------------------------------

    def _model_infer(self, infer: Infer) -> Unary:
        gate, guard, recorder = self.gate, self.infer_guard, self.requests

        async def model_infer(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            served: tuple[str, str] | None = None
            code = grpc.StatusCode.INTERNAL
            try:
                remaining = context.time_remaining()
                if remaining is not None and remaining <= 0:  # waited out its deadline below our code
                    raise DeadlineExceeded(DEADLINE_TEXT)
                gate.enter(True)
                try:
                    guard.check(request)
                    reply, served = await infer(request, context)
                finally:
                    gate.leave(True)
                code = grpc.StatusCode.OK
                return reply
            except ServingError as exc:
                code = status_of(exc)
                await context.abort(code, message_of(exc))
            except asyncio.CancelledError:  # the client went away, or its deadline passed
                remaining = context.time_remaining()
                expired = remaining is not None and remaining <= 0
                code = grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
                raise
            except Exception as exc:
                log.exception("unexpected error in ModelInfer")
                await context.abort(grpc.StatusCode.INTERNAL, message_of(exc))
            finally:
                recorder.finished(
                    request, served, code, time.perf_counter() - started, context.invocation_metadata
                )

        return model_infer

    # ---- every other method --------------------------------------------------------------------------

    def _unary(self, method: str, behaviour: Unary) -> Unary:
        call, gate, admin, guard = CallFacts.of(method), self.gate, self.admin, self.infer_guard

        async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
            async with admitted(gate, admin, call, context):
                try:
                    guard.check(request)
                except ServingError as exc:
                    await context.abort(status_of(exc), message_of(exc))
                return await behaviour(request, context)

        return handle

    def _streamed(self, method: str, behaviour: Streamed) -> Streamed:
        """A stream is admitted as one call; it ends at its first request that fails the guard: the
        replies to the requests before it are sent, then the call ends with that request's status."""
        call, gate, admin, guard = CallFacts.of(method), self.gate, self.admin, self.infer_guard

        async def handle(
            requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Any]:
            refused: list[InvalidInput] = []

            async def checked() -> AsyncIterator[Any]:
                async for request in requests:
                    try:
                        guard.check(request)
                    except InvalidInput as exc:
                        refused.append(exc)
                        return
                    yield request

            async with admitted(gate, admin, call, context):
                async for reply in behaviour(checked(), context):
                    yield reply
            if refused:
                await context.abort(status_of(refused[0]), message_of(refused[0]))

        return handle
