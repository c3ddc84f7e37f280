"""`WorkerLink`: the model worker's end of the front-ends' links (serving/frontends/wire.py).

Each front-end connects once, names its slot ring, and then sends INFER frames. For each one the worker
builds the domain request with numpy views straight over the slot (no copy), calls the one facade
(`InferenceService.infer`), records the request as ModelInfer's gRPC handler would (serving_requests_total,
latency from when the front-end received it, access log), writes the outputs after the inputs in the
slot and replies. A weak reference to the slot's view tells when nothing (a shadow copy, a batch still
running) holds the inputs any more: the reply says so, or a FREE frame follows later.

A front-end that goes away takes only its own requests with it: they are cancelled here.

On a GPU the worker page-locks each ring (`pin`, serving/backends/host_memory.py, injected by the
server), so a lone request's inputs go from their slot to the device in one DMA. The registration is
undone once the front-end has gone and the last view of its slots is released (a batch may still be
copying from them until then).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import math
import mmap
import struct
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from serving.api.codec import bytes_tensor, join_bytes, split_bytes
from serving.api.request_log import RequestFacts, RequestRecorder
from serving.api.status import message_of, status_of
from serving.core.request import InferenceRequest, InferenceResponse
from serving.core.service import InferenceService
from serving.errors import InvalidInput
from serving.frontends import wire
from serving.frontends.ring import SlotRing, aligned
from serving.types import V2_TO_NUMPY, Array, numpy_to_v2

log = logging.getLogger("serving.frontends")
_U32 = struct.Struct("<I")
Pin = Callable[[mmap.mmap, str], Callable[[], None] | None]  # memory, what it is -> unpin, or None


@dataclass
class FrontEndFacts:
    """What /metrics says of one connected front-end."""

    index: int
    pid: int
    requests: int = 0
    tasks: dict[int, asyncio.Task[None]] = field(default_factory=dict)


class WorkerLink:
    def __init__(
        self, service: InferenceService, recorder: RequestRecorder | None, path: Path, pin: Pin | None = None
    ) -> None:
        self._service = service
        self._recorder = recorder
        self.path = path
        self._pin = pin
        self.connected: list[FrontEndFacts] = []
        self._changed = asyncio.Event()
        self._server: asyncio.AbstractServer | None = None
        self._next_index = 0
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))

    async def wait_for(self, count: int, timeout_s: float) -> None:
        """Until `count` front-ends are connected; TimeoutError otherwise."""
        async with asyncio.timeout(timeout_s):
            while len(self.connected) < count:
                self._changed.clear()
                await self._changed.wait()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for facts in self.connected:
            for task in list(facts.tasks.values()):
                task.cancel()
        for writer in list(self._writers):
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            kind, _, body = await wire.read_frame(reader)
            hello = wire.split_header(body)[0] if kind == wire.HELLO else None
            if hello is None:
                raise ValueError("the first frame is not HELLO")
            ring = SlotRing(Path(hello["ring"]), int(hello["slots"]), int(hello["slot_bytes"]), create=False)
        except (OSError, ValueError, KeyError, asyncio.IncompleteReadError) as exc:
            log.warning("front-end link refused: %s", exc)
            writer.close()
            return
        facts = FrontEndFacts(self._next_index, int(hello["pid"]))
        self._next_index += 1
        what = f"front-end pid {facts.pid}'s slot ring"  # pinning may initialise CUDA: off the loop
        unpin = None if self._pin is None else await asyncio.to_thread(self._pin, ring.memory, what)
        writer.write(wire.frame(wire.WELCOME, facts.index))
        self.connected.append(facts)
        self._changed.set()
        connection = _Connection(self._service, self._recorder, ring, writer, facts, unpin)
        self._writers.add(writer)
        try:
            await connection.run(reader)
        finally:
            self._writers.discard(writer)
            self.connected.remove(facts)
            self._changed.set()
            for task in list(facts.tasks.values()):
                task.cancel()  # its front-end is gone: nobody waits for these replies
            writer.close()
            connection.gone()
            log.info("front-end pid %d disconnected", facts.pid)


class _Connection:
    def __init__(
        self,
        service: InferenceService,
        recorder: RequestRecorder | None,
        ring: SlotRing,
        writer: asyncio.StreamWriter,
        facts: FrontEndFacts,
        unpin: Callable[[], None] | None = None,
    ) -> None:
        self._service = service
        self._recorder = recorder
        self._ring = ring
        self._writer = writer
        self._facts = facts
        self._held: set[int] = set()  # slots whose reply said "held": FREE follows when released
        self._viewed = 0  # slots whose inputs are still viewed (a finalizer per slot counts it down)
        self._unpin = unpin
        self._gone = False
        loop = asyncio.get_running_loop()
        self._loop = loop

    async def run(self, reader: asyncio.StreamReader) -> None:
        tasks = self._facts.tasks
        while True:
            try:
                kind, number, body = await wire.read_frame(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            if kind == wire.INFER:
                (request_number,) = _U32.unpack_from(body, 0)
                head = json.loads(body[4:])
                task = asyncio.create_task(self._infer(request_number, number, head))
                task.add_done_callback(functools.partial(self._finished, request_number, head))
                tasks[request_number] = task
                self._facts.requests += 1
            elif kind == wire.CANCEL and (running := tasks.get(number)) is not None:
                running.cancel()
            elif kind == wire.RECORD:
                head = wire.split_header(body)[0]
                self._record(head, grpc.StatusCode[head["code"]], None)

    async def _infer(self, number: int, slot: int, head: dict[str, Any]) -> None:
        reply: dict[str, Any]
        tail = b""
        code, served = grpc.StatusCode.OK, None
        released: Callable[[], bool] = lambda: True  # noqa: E731
        try:
            request, released = self._request(slot, head)
            response = await self._service.infer(request)
            del request
            reply, tail = self._reply(slot, int(head["end"]), response)
            served = (response.model_name, response.model_version)
        except asyncio.CancelledError:
            code = _cancelled(head)
            reply = {"e": code.name, "msg": "the call was cancelled"}
        except Exception as exc:
            code = status_of(exc)
            reply = {"e": code.name, "msg": message_of(exc)}
        self._record(head, code, served)
        held = not released()
        if held:
            self._held.add(slot)
        reply["held"] = held
        if not self._writer.is_closing():
            self._writer.write(wire.header_frame(wire.REPLY, number, reply, tail))

    def _finished(self, number: int, head: dict[str, Any], task: asyncio.Task[None]) -> None:
        """A task cancelled before it started never ran `_infer`: record and answer it here."""
        self._facts.tasks.pop(number, None)
        if not task.cancelled():
            return
        code = _cancelled(head)
        self._record(head, code, None)
        if not self._writer.is_closing():
            reply = {"e": code.name, "msg": "the call was cancelled", "held": False}
            self._writer.write(wire.header_frame(wire.REPLY, number, reply))

    def _request(self, slot: int, head: dict[str, Any]) -> tuple[InferenceRequest, Callable[[], bool]]:
        """The domain request over the slot's bytes, and whether every view of them is gone yet."""
        ring = self._ring
        base = np.frombuffer(ring.memory, np.uint8, ring.slot_bytes, ring.start(slot))
        watch = weakref.finalize(base, self._released_soon, slot)
        self._viewed += 1
        inputs = {
            name: _tensor(base[offset : offset + size], name, datatype, tuple(shape))
            for name, datatype, shape, offset, size in head["in"]
        }
        del base  # the inputs' views (and whatever keeps them) hold the slot from now on
        request = InferenceRequest(
            model_name=head["model"],
            model_version=head["version"],
            id=head["id"],
            inputs=inputs,
            requested_outputs=tuple(head["outputs"]),
            parameters=head["parameters"],
            routing_key=head["routing_key"],
            deadline=head["deadline"],
            timeout_s=head["timeout_s"],
            output_classes=head["classes"],
        )
        return request, lambda: not watch.alive

    def _reply(self, slot: int, start: int, response: InferenceResponse) -> tuple[dict[str, Any], bytes]:
        """Write the outputs after the inputs in the slot; what does not fit travels inline."""
        ring = self._ring
        offset, inline = aligned(start), []
        outputs: list[list[Any]] = []
        for name, array in response.outputs.items():
            datatype = numpy_to_v2(array.dtype)
            if datatype == "BYTES":
                data = np.frombuffer(join_bytes(array), np.uint8)
            else:
                data = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
            size = int(data.nbytes)
            where = offset
            if offset + size <= ring.slot_bytes:
                np.frombuffer(ring.memory, np.uint8, size, ring.start(slot) + offset)[:] = data
                offset = aligned(offset + size)
            else:
                where = -1
                inline.append(data.tobytes())
            outputs.append([name, datatype, [int(d) for d in array.shape], where, size])
        meta = {"model": response.model_name, "version": response.model_version, "id": response.id}
        return {**meta, "out": outputs}, b"".join(inline)

    def _record(self, head: dict[str, Any], code: grpc.StatusCode, served: tuple[str, str] | None) -> None:
        if self._recorder is None or "model" not in head:
            return
        facts = RequestFacts(head["model"], head["version"], head["id"], served)
        seconds = time.monotonic() - float(head["t0"])
        self._recorder.record(facts, code, seconds, lambda: str(head.get("request_id", "")))

    def _released_soon(self, slot: int) -> None:
        """The finalizer of a slot's view (any thread): send FREE if the reply said it was held."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: the server is stopping
            self._loop.call_soon_threadsafe(self._released, slot)

    def _released(self, slot: int) -> None:
        self._viewed -= 1
        if slot in self._held:
            self._held.discard(slot)
            if not self._writer.is_closing():
                self._writer.write(wire.frame(wire.FREE, slot))
        self._unpin_when_unused()

    def gone(self) -> None:
        """The front-end has disconnected: its ring is unpinned once no view of a slot is left."""
        self._gone = True
        self._unpin_when_unused()

    def _unpin_when_unused(self) -> None:
        if self._gone and not self._viewed and self._unpin is not None:
            unpin, self._unpin = self._unpin, None
            unpin()


def _tensor(piece: Array, name: str, datatype: str, shape: tuple[int, ...]) -> Array:
    """One input over its bytes in the slot: a read-only view, or a BYTES array of copies."""
    if datatype == "BYTES":
        where = f"input '{name}'"
        return bytes_tensor(split_bytes(piece.tobytes(), where), shape, math.prod(shape), where)
    if datatype not in V2_TO_NUMPY:
        raise InvalidInput(f"input '{name}': unknown datatype '{datatype}'")
    array = piece.view(V2_TO_NUMPY[datatype]).reshape(shape)
    array.flags.writeable = False
    return array


def _cancelled(head: dict[str, Any]) -> grpc.StatusCode:
    """The code a cancelled request is counted under: its deadline's, if that has passed."""
    deadline = head.get("deadline")
    expired = deadline is not None and time.monotonic() >= float(deadline)
    return grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
