"""The gRPC services' handlers, registered so that no client mistake reaches a servicer unchecked.

- A message gRPC cannot parse as the method's request (corrupt wire format, a string field that is not
  UTF-8) would make protobuf raise inside gRPC, before any handler runs, and the client would get
  UNKNOWN. Here the deserializer turns it into a `MalformedRequest`, which the handler refuses with
  INVALID_ARGUMENT (the status and the reason), and the server carries on.
- A ModelInfer request is checked for its counts and names (serving/api/codec.check_names) before any
  tensor is decoded: more than `max_inputs` inputs, outputs or raw contents, or input names the loaded
  model does not have, are refused at once, so decoding cannot hold the event loop for long.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError, Message

from serving.api.codec import check_names
from serving.errors import InvalidInput
from serving.proto import inference_pb2
from serving.quoting import clip

SCAN_BYTES = 64 * 1024  # smaller messages are parsed at once: their parse is short whatever they hold
# ModelInferRequest's repeated top-level fields: parameters, inputs, outputs, raw_input_contents.
_REPEATED = {4: "parameters", 5: "inputs", 6: "requested outputs", 7: "raw_input_contents"}
InputNames = Callable[[str], Collection[str] | None]  # a loaded model's input names; None: not loaded


@dataclass(frozen=True)
class MalformedRequest:
    """What the deserializer hands on instead of a message it could not parse. The fields the access
    log reads (serving/api/request_log.py) are present and empty."""

    reason: str
    model_name: str = ""
    model_version: str = ""
    id: str = ""


def safe_deserializer(message_type: type[Message], max_entries: int) -> Callable[[bytes], Any]:
    """Parse `message_type`; a ModelInferRequest over SCAN_BYTES is first scanned (top-level fields only)
    and refused unparsed when a repeated field has more than `max_entries` entries: protobuf's parse holds
    the GIL, so a message of a million small tensors would otherwise stall every other call."""
    name = message_type.DESCRIPTOR.full_name
    scan = message_type is inference_pb2.ModelInferRequest

    def deserialize(data: bytes) -> Any:
        if scan and len(data) > SCAN_BYTES and (why := too_many_entries(data, max_entries)):
            return MalformedRequest(why)
        try:
            return message_type.FromString(data)
        except DecodeError as exc:
            return MalformedRequest(f"the request is not a valid {name}: {clip(str(exc))}")

    return deserialize


def too_many_entries(data: bytes, limit: int) -> str:
    """Why a serialized ModelInferRequest has too many top-level entries ("" if it has not, or if the
    scan cannot tell: the parser then decides). Reads at most about 4 × `limit` field headers."""
    counts = dict.fromkeys(_REPEATED, 0)
    offset, end, fields = 0, len(data), 0
    while offset < end:
        key, offset = _varint(data, offset)
        if offset < 0:
            return ""
        number, wire = key >> 3, key & 7
        fields += 1
        if number in counts:
            counts[number] += 1
            if counts[number] > limit:
                return (
                    f"the request has more than {limit} {_REPEATED[number]}, the most a request may have "
                    "(--max-inputs-per-request)"
                )
        if fields > 4 * limit + 64:
            return f"the request has more than {fields - 1} top-level fields"
        if wire == 0:
            _, offset = _varint(data, offset)
        elif wire == 2:
            length, offset = _varint(data, offset)
            offset += length
        elif wire in (1, 5):
            offset += 8 if wire == 1 else 4
        else:
            return ""  # groups do not occur in proto3: let the parser refuse it
        if offset < 0:
            return ""
    return ""


def _varint(data: bytes, offset: int) -> tuple[int, int]:
    """A varint at `offset` and the offset after it; (0, -1) when it runs past the end (malformed)."""
    value, shift = 0, 0
    while offset < len(data) and shift < 70:
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, offset
        shift += 7
    return 0, -(1 << 62)


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
