"""`FrontEnd`: one front-end process's gRPC server, sharing the public port with its siblings
(SO_REUSEPORT: the kernel spreads connections over them).

ModelInfer is served here: parsed, checked (--max-inputs-per-request) and decoded into the domain
request by the same codec as the single-process server, its tensors written once into a slot of this
front-end's ring, run by the model worker (serving/frontends/client.py), and the reply encoded here.
Such a request goes to the worker as raw bytes instead (serving/frontends/forward.py), answered by the
worker's own servicer exactly as in one process, when it:
  - cannot be decoded or fails a check here (the worker then gives the precise error and counts it),
  - names client shared-memory regions (registered with the worker),
  - has tensors larger than a slot (ring.DEFAULT_SLOT_BYTES), or finds every slot in use.
Every other RPC is forwarded the same way.

A ModelInfer naming more entries than --max-inputs-per-request is refused here unparsed, as the single
process refuses it (serving/api/request_guard.py). Calls refused here are still counted by the worker
(a RECORD frame): serving_requests_total and the access log stay whole.
Admission (--max-concurrent-rpcs, per front-end) and the admin guard (token or loopback peer) are
applied here, where the client's address is known. SIGTERM drains: new calls are refused with
UNAVAILABLE, accepted ones complete, then the process exits 0. If the worker goes away, it exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from serving.api.admission import AdmissionGate
from serving.api.auth import AdminGuard, read_token
from serving.api.calls import MODEL_INFER
from serving.api.codec import check_names, decode_request, metadata_value
from serving.api.request_guard import SCAN_BYTES, too_many_entries
from serving.api.request_log import REQUEST_ID_METADATA
from serving.api.status import message_of, status_of
from serving.api.tls import check_server_files
from serving.errors import ServingError
from serving.frontends.client import SlotsFull, WorkerClient, WorkerError
from serving.frontends.forward import Forwarder
from serving.frontends.ring import SlotRing
from serving.proto import inference_pb2 as pb
from serving.shared_memory.tensors import REGION

log = logging.getLogger("serving.frontends")


@dataclass(frozen=True)
class FrontEndOptions:
    """What the supervisor hands each front-end process (as JSON on its command line)."""

    host: str
    port: int
    worker_grpc: str  # the worker's gRPC unix socket
    link: str  # the worker's link socket (serving/frontends/link.py)
    max_message_bytes: int
    max_inputs_per_request: int
    max_concurrent_rpcs: int
    grace_period_s: float
    admin_token_file: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    log_format: str = "text"
    log_level: str = "INFO"


def _reply_bytes(reply: pb.ModelInferResponse | bytes) -> bytes:
    return reply if isinstance(reply, bytes) else reply.SerializeToString()


class _Routes(grpc.GenericRpcHandler):  # type: ignore[misc]
    def __init__(self, front: FrontEnd) -> None:
        self._front = front
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method: str = handler_call_details.method
        handler = self._handlers.get(method)
        if handler is None:
            if method == MODEL_INFER:
                handler = grpc.unary_unary_rpc_method_handler(
                    self._front.model_infer, response_serializer=_reply_bytes
                )
            else:
                handler = self._front.forwarder.handler(method)
            self._handlers[method] = handler
        return handler


class FrontEnd:
    def __init__(self, options: FrontEndOptions) -> None:
        self.options = options
        self.gate = AdmissionGate(options.max_concurrent_rpcs)
        grpc_options = [
            ("grpc.max_receive_message_length", options.max_message_bytes),
            ("grpc.max_send_message_length", options.max_message_bytes),
        ]
        self._channel = grpc.aio.insecure_channel(f"unix:{options.worker_grpc}", options=grpc_options)
        token_file = options.admin_token_file
        guard = AdminGuard(None if token_file is None else read_token(Path(token_file)))
        self.forwarder = Forwarder(self._channel, self.gate, guard)
        self.ring = SlotRing.create()
        self.client = WorkerClient(self.ring)
        self._server = grpc.aio.server(options=[*grpc_options, ("grpc.so_reuseport", 1)])
        self._server.add_generic_rpc_handlers([_Routes(self)])

    async def model_infer(
        self, raw: bytes, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse | bytes:
        try:
            self.gate.enter(True)
        except ServingError as exc:  # draining, or too many calls: counted by the worker all the same
            await self._refuse(context, status_of(exc), message_of(exc), raw)
        try:
            return await self._infer(raw, context)
        finally:
            self.gate.leave(True)

    async def _refuse(
        self, context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str, raw: bytes
    ) -> None:
        """End a ModelInfer that never reaches the worker, and have the worker count it."""
        facts = ("", "", "")
        if len(raw) <= SCAN_BYTES:  # a short parse names the model; a large message stays unparsed
            with contextlib.suppress(DecodeError):
                request = pb.ModelInferRequest.FromString(raw)
                facts = (request.model_name, request.model_version, request.id)
        self.client.record(*facts, code)
        await context.abort(code, message)

    async def _infer(self, raw: bytes, context: grpc.aio.ServicerContext) -> pb.ModelInferResponse | bytes:
        metadata = context.invocation_metadata() or ()
        if len(raw) > SCAN_BYTES and (why := too_many_entries(raw, self.options.max_inputs_per_request)):
            # refused unparsed, as in one process
            await self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT, why, b"")
        try:
            request = pb.ModelInferRequest.FromString(raw)
            check_names(request, self.options.max_inputs_per_request)
            if _names_shared_memory(request):
                raise SlotsFull("client shared memory is registered with the worker")
            decoded = decode_request(request, metadata, context.time_remaining(), None)
            return await self.client.infer(decoded, metadata_value(metadata, REQUEST_ID_METADATA) or "")
        except (DecodeError, SlotsFull, ServingError) as exc:
            if isinstance(exc, ServingError) and self.client.closed.is_set():
                await context.abort(status_of(exc), message_of(exc))
            return await self.forwarder.call(MODEL_INFER, raw, context)  # the worker's own path
        except WorkerError as exc:
            await context.abort(exc.code, exc.message)
        raise AssertionError("unreachable")

    async def run(self) -> int:
        """Serve until SIGTERM (drain, exit 0) or until the worker goes away (exit 1)."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        address = f"{self.options.host}:{self.options.port}"
        tls = check_server_files(
            *(_path(p) for p in (self.options.tls_cert, self.options.tls_key, self.options.tls_client_ca))
        )
        bound = (
            self._server.add_insecure_port(address)
            if tls is None
            else self._server.add_secure_port(address, tls.grpc_credentials())
        )
        if bound == 0:
            raise OSError(f"front-end: cannot bind {address}")
        await self._server.start()
        await self.client.connect(Path(self.options.link))
        log.info("front-end %d (pid %d) serving %s", self.client.index, os.getpid(), address)
        gone = asyncio.create_task(self.client.closed.wait())
        signalled = asyncio.create_task(stop.wait())
        await asyncio.wait({gone, signalled}, return_when=asyncio.FIRST_COMPLETED)
        if not stop.is_set():
            log.error("front-end pid %d: the model worker went away; exiting", os.getpid())
            await self._server.stop(0)
            return 1
        await self._drain()
        return 0

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.grace_period_s
        self.gate.begin_drain()  # new calls: UNAVAILABLE
        running = self.gate.in_flight
        if not await self.gate.drained(deadline - loop.time()):
            log.warning(
                "front-end pid %d: grace period over, %d calls cancelled", os.getpid(), self.gate.in_flight
            )
        # what still runs now are streams (health Watch), which end when the worker ends them
        await self._server.stop(max(deadline - loop.time(), 0.0))
        self.client.close()
        await self._channel.close()
        log.info("front-end pid %d drained %d accepted calls", os.getpid(), running)


def _names_shared_memory(request: pb.ModelInferRequest) -> bool:
    return any(REGION in t.parameters for t in request.inputs) or any(
        REGION in t.parameters for t in request.outputs
    )


def _path(value: str | None) -> Path | None:
    return None if value is None else Path(value)


def options_from(text: str) -> FrontEndOptions:
    fields: dict[str, Any] = json.loads(text)
    return FrontEndOptions(**fields)
