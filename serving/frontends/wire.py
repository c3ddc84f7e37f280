"""The control protocol between a front-end process and the model worker, over one unix stream socket.

Every message is one frame: `<I` length of what follows, `<B` kind, `<I` number, then a body. Tensor
bytes never travel here unless they do not fit a slot (then the reply carries them inline); the body is
a small JSON header (names, datatypes, shapes, offsets into the slot, parameters).

    front-end → worker   HELLO  (0)       {"pid", "ring", "slots", "slot_bytes"}: attach my ring
                         INFER  (slot)    `<I` request number + header: run the request in this slot
                         CANCEL (request) the client went away: cancel it
                         RECORD (0)       {"model", "version", "id", "code", "t0"}: count a call the
                                          front-end refused itself (admission, unparsed)
    worker → front-end   WELCOME (index)  attached; the front-end's index among the worker's front-ends
                         REPLY  (request) `<I` header length + header + inline output bytes, if any
                         FREE   (slot)    the inputs of a slot whose reply said "held" are released
"""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

HELLO, WELCOME, INFER, CANCEL, REPLY, FREE, RECORD = range(7)
_FRAME = struct.Struct("<IBI")  # length of (kind, number, body), kind, number
_U32 = struct.Struct("<I")
MAX_FRAME_BYTES = 1 << 31  # a reply's inline outputs are bounded by the gRPC message limit


def frame(kind: int, number: int, body: bytes = b"") -> bytes:
    return _FRAME.pack(len(body) + 5, kind, number) + body


def header_frame(kind: int, number: int, header: dict[str, Any], tail: bytes = b"") -> bytes:
    """A frame whose body is `<I` header length + JSON header + `tail`."""
    text = json.dumps(header, separators=(",", ":")).encode()
    return frame(kind, number, _U32.pack(len(text)) + text + tail)


def split_header(body: bytes) -> tuple[dict[str, Any], memoryview]:
    """The JSON header of a body made by header_frame, and the bytes after it."""
    (length,) = _U32.unpack_from(body, 0)
    header = json.loads(body[4 : 4 + length])
    if not isinstance(header, dict):
        raise ValueError("frame header is not an object")
    return header, memoryview(body)[4 + length :]


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, int, bytes]:
    """(kind, number, body) of the next frame; IncompleteReadError at the end of the stream."""
    length, kind, number = _FRAME.unpack(await reader.readexactly(_FRAME.size))
    if not 5 <= length <= MAX_FRAME_BYTES:
        raise ValueError(f"bad frame length {length}")
    body = await reader.readexactly(length - 5) if length > 5 else b""
    return kind, number, body
