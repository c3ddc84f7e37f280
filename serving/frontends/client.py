"""`WorkerClient`: a front-end's end of its link to the model worker (serving/frontends/wire.py).

`infer` writes a decoded request's tensors once into a free slot of the front-end's ring and sends the
slot's description; the reply's outputs are copied out of the slot into the ModelInferResponse (the
one reply serialisation needs them as bytes), after which the slot is free again, or once the worker
says it no longer holds the inputs. If the worker goes away, every waiting request fails UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from serving.api.codec import join_bytes
from serving.core.request import InferenceRequest
from serving.errors import Unavailable
from serving.frontends import wire
from serving.frontends.ring import SlotRing, aligned
from serving.proto import inference_pb2 as pb
from serving.types import numpy_to_v2

log = logging.getLogger("serving.frontends")
_U32 = struct.Struct("<I")


@dataclass(frozen=True)
class WorkerError(Exception):
    """The worker answered a request with this status."""

    code: grpc.StatusCode
    message: str


class SlotsFull(Exception):
    """No slot can take this request now (all in use, or its tensors are larger than a slot)."""


class WorkerClient:
    def __init__(self, ring: SlotRing) -> None:
        self._ring = ring
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[int, tuple[int, asyncio.Future[pb.ModelInferResponse]]] = {}
        self._next = 0
        self.index = -1
        self.closed = asyncio.Event()
        self._reading: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self.closed.is_set()

    async def connect(self, path: Path) -> None:
        reader, writer = await asyncio.open_unix_connection(str(path))
        hello = {"pid": os.getpid(), "ring": str(self._ring.path), "slots": self._ring.slots}
        writer.write(wire.header_frame(wire.HELLO, 0, {**hello, "slot_bytes": self._ring.slot_bytes}))
        kind, self.index, _ = await wire.read_frame(reader)
        if kind != wire.WELCOME:
            raise ConnectionError("the worker did not welcome this front-end")
        self._ring.unlink()  # both sides have it mapped: nothing is left in /dev/shm if one dies
        self._writer = writer
        self._reading = asyncio.create_task(self._read(reader))

    def close(self) -> None:
        self._closing = True
        if self._writer is not None:
            self._writer.close()

    def record(self, model: str, version: str, request_id: str, code: grpc.StatusCode) -> None:
        """Have the worker count a ModelInfer this front-end refused itself."""
        if self._writer is not None and not self.closed.is_set():
            head = {"model": model, "version": version, "id": request_id, "code": code.name}
            self._writer.write(wire.header_frame(wire.RECORD, 0, {**head, "t0": time.monotonic()}))

    async def infer(self, request: InferenceRequest, request_id: str) -> pb.ModelInferResponse:
        """The worker's reply; SlotsFull when the request cannot travel through a slot now, WorkerError
        with the worker's status, Unavailable when the worker is gone."""
        ring, writer = self._ring, self._writer
        if writer is None or self.closed.is_set():
            raise Unavailable("the model worker is not reachable")
        layout, end = _layout(request)
        if end > ring.slot_bytes:
            raise SlotsFull(f"tensors of {end} bytes do not fit a {ring.slot_bytes}-byte slot")
        slot = ring.acquire()
        if slot is None:
            raise SlotsFull("every slot is in use")
        start = ring.start(slot)
        for (_, datatype, _, offset, size), array in zip(layout, request.inputs.values(), strict=True):
            data = _bytes_of(array, datatype)
            np.frombuffer(ring.memory, np.uint8, size, start + offset)[:] = data
        number = self._next = (self._next + 1) & 0xFFFFFFFF
        future: asyncio.Future[pb.ModelInferResponse] = asyncio.get_running_loop().create_future()
        self._pending[number] = (slot, future)
        head = {
            "model": request.model_name,
            "version": request.model_version,
            "id": request.id,
            "in": layout,
            "end": end,
            "outputs": list(request.requested_outputs),
            "parameters": request.parameters,
            "routing_key": request.routing_key,
            "deadline": request.deadline,  # time.monotonic() is one clock for every process
            "timeout_s": request.timeout_s,
            "classes": request.output_classes,
            "request_id": request_id,
            "t0": time.monotonic(),
        }
        text = json.dumps(head, separators=(",", ":")).encode()
        writer.write(wire.frame(wire.INFER, slot, _U32.pack(number) + text))
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            if not self.closed.is_set():
                writer.write(wire.frame(wire.CANCEL, number))
            raise

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                kind, number, body = await wire.read_frame(reader)
                if kind == wire.REPLY:
                    self._replied(number, body)
                elif kind == wire.FREE:
                    self._ring.release(number)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError) as exc:
            if not self._closing:
                log.warning("front-end: the link to the model worker ended (%s)", type(exc).__name__)
        finally:
            self.closed.set()
            for _, future in self._pending.values():
                if not future.done():
                    future.set_exception(Unavailable("the model worker went away"))
            self._pending.clear()

    def _replied(self, number: int, body: bytes) -> None:
        header, tail = wire.split_header(body)
        slot, future = self._pending.pop(number)
        try:
            if "e" in header:
                if not future.done():
                    future.set_exception(WorkerError(grpc.StatusCode[header["e"]], header["msg"]))
            elif not future.done():
                future.set_result(self._response(slot, header, tail))
        finally:
            if not header["held"]:
                self._ring.release(slot)

    def _response(self, slot: int, header: dict[str, Any], tail: memoryview) -> pb.ModelInferResponse:
        reply = pb.ModelInferResponse(
            model_name=header["model"], model_version=header["version"], id=header["id"]
        )
        memory, start, inline = self._ring.memory, self._ring.start(slot), 0
        for name, datatype, shape, offset, size in header["out"]:
            tensor = reply.outputs.add(name=name, datatype=datatype)
            tensor.shape.extend(shape)
            if offset >= 0:
                reply.raw_output_contents.append(memory[start + offset : start + offset + size])
            else:
                reply.raw_output_contents.append(bytes(tail[inline : inline + size]))
                inline += size
        return reply


def _layout(request: InferenceRequest) -> tuple[list[list[Any]], int]:
    """[name, datatype, shape, offset, size] of each input in a slot, and where the inputs end."""
    layout: list[list[Any]] = []
    offset = 0
    for name, array in request.inputs.items():
        datatype = numpy_to_v2(array.dtype)
        size = len(join_bytes(array)) if datatype == "BYTES" else int(array.nbytes)
        layout.append([name, datatype, [int(d) for d in array.shape], offset, size])
        offset = aligned(offset + size)
    return layout, offset


def _bytes_of(array: Any, datatype: str) -> Any:
    if datatype == "BYTES":
        return np.frombuffer(join_bytes(array), np.uint8)
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8)
