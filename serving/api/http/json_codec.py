"""KServe v2 REST bodies ⇄ domain types, with Triton's binary tensor data extension.

A request body is JSON, or (binary extension) `Inference-Header-Content-Length` bytes of JSON followed by
the binary inputs, in the order of the inputs that carry `"parameters": {"binary_data_size": N}`. JSON
`data` may be nested or flat (row-major); BYTES elements are JSON strings (UTF-8), or in binary data
4-byte little-endian lengths each followed by the bytes, as in gRPC's raw contents.

An output goes back as binary data when it asks for it (`"parameters": {"binary_data": true}`), or when
the request sets `"binary_data_output": true` and the output does not say otherwise; the reply is then
the JSON header (its length in `Inference-Header-Content-Length`) followed by those outputs' bytes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from serving.api.codec import (
    MAX_INPUTS_PER_REQUEST,
    bytes_tensor,
    element_count,
    output_classes,
    queue_timeout_s,
    raw_bytes,
    routing_key,
    split_bytes,
)
from serving.api.http.bodies import json_object
from serving.core.classification import CLASSIFICATION_PARAMETER
from serving.core.request import InferenceRequest, InferenceResponse, ParamValue
from serving.errors import InvalidInput, ModelExecutionError
from serving.quoting import clip
from serving.shared_memory.regions import SharedMemoryRegions
from serving.shared_memory.tensors import SharedTensor, shared_tensor
from serving.types import V2_TO_NUMPY, Array, numpy_to_v2

HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY_DATA_SIZE = "binary_data_size"
BINARY_DATA = "binary_data"
BINARY_DATA_OUTPUT = "binary_data_output"
_INT64 = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED64,
}


@dataclass(frozen=True)
class OutputEncoding:
    """How the reply carries each output: a transport matter, kept beside the domain request."""

    binary_default: bool = False  # the request's binary_data_output
    binary: dict[str, bool] = field(default_factory=dict)  # an output's own binary_data
    shared: dict[str, SharedTensor] = field(default_factory=dict)  # outputs written to shared memory

    def is_binary(self, name: str) -> bool:
        return self.binary.get(name, self.binary_default)


def decode_infer(
    body: bytes,
    header_length: str | None,
    model: str,
    version: str,
    routing_header: str = "",
    regions: SharedMemoryRegions | None = None,
) -> tuple[InferenceRequest, OutputEncoding]:
    """InvalidInput, naming the input, when the body does not describe the tensors it carries.
    `regions`: the registered shared-memory regions that inputs and outputs may name."""
    json_end = _header_length(header_length, len(body))
    document = json_object(body[:json_end])
    parameters = _parameters(document.get("parameters"), "request")
    inputs = _decode_inputs(document.get("inputs"), memoryview(body)[json_end:], regions)
    requested, classes, encoding = _outputs(document.get("outputs"), parameters, regions)
    request_id = document.get("id", "")
    if not isinstance(request_id, str):
        raise InvalidInput(f"'id' must be a string, got {request_id!r}")
    request = InferenceRequest(
        model_name=model,
        model_version=version,
        id=request_id,
        inputs=inputs,
        requested_outputs=requested,
        parameters=parameters,
        routing_key=routing_key(parameters, routing_header),
        timeout_s=queue_timeout_s(parameters),
        output_classes=classes,
    )
    return request, encoding


def _header_length(value: str | None, body_length: int) -> int:
    if value is None:
        return body_length
    try:
        length = int(value)
    except ValueError:
        raise InvalidInput(f"{HEADER_LENGTH} must be an integer, got {value!r}") from None
    if not 0 <= length <= body_length:
        raise InvalidInput(f"{HEADER_LENGTH} {length} is outside the body's {body_length} bytes")
    return length


def _parameters(value: Any, where: str) -> dict[str, ParamValue]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"{where} 'parameters' must be a JSON object")
    for key, item in value.items():
        if not isinstance(item, bool | int | float | str):
            raise InvalidInput(f"{where} parameter '{key}' must be a boolean, number or string, got {item!r}")
    return value


def _decode_inputs(value: Any, binary: memoryview, regions: SharedMemoryRegions | None) -> dict[str, Array]:
    if not isinstance(value, list):
        raise InvalidInput("the request needs an 'inputs' list")
    if len(value) > MAX_INPUTS_PER_REQUEST:
        raise InvalidInput(
            f"the request has {len(value)} inputs, more than the {MAX_INPUTS_PER_REQUEST} a request may have"
        )
    inputs: dict[str, Array] = {}
    offset = 0
    for tensor in value:
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise InvalidInput("each input must be a JSON object with a 'name'")
        name = tensor["name"]
        if name in inputs:
            raise InvalidInput(f"input '{name}' is given twice")
        params = _parameters(tensor.get("parameters"), f"input '{name}'")
        place = shared_tensor(regions, params, f"input '{name}'")
        if place is not None:
            inputs[name] = _decode_binary_tensor(tensor, place.read())
            continue
        size = params.get(BINARY_DATA_SIZE)
        if size is None:
            inputs[name] = _decode_json_tensor(tensor)
            continue
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise InvalidInput(f"input '{name}': binary_data_size must be a non-negative integer")
        if offset + size > len(binary):
            raise InvalidInput(
                f"input '{name}': binary_data_size {size} overruns the {len(binary) - offset} bytes left"
            )
        inputs[name] = _decode_binary_tensor(tensor, binary[offset : offset + size])
        offset += size
    if offset != len(binary):
        raise InvalidInput(f"{len(binary) - offset} bytes of binary data are not claimed by any input")
    return inputs


def _shape_and_dtype(tensor: Mapping[str, Any]) -> tuple[str, tuple[int, ...], str, np.dtype[Any]]:
    where = f"input '{clip(tensor['name'])}'"
    datatype = tensor.get("datatype")
    dtype = V2_TO_NUMPY.get(datatype) if isinstance(datatype, str) else None
    if dtype is None or not isinstance(datatype, str):
        raise InvalidInput(f"{where}: unknown datatype '{datatype}'")
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise InvalidInput(f"{where}: 'shape' must be a list of integers, got {shape!r}")
    element_count(shape, dtype.itemsize, where)  # no negative or impossible dimension
    return where, tuple(shape), datatype, dtype


def _decode_binary_tensor(tensor: Mapping[str, Any], data: bytes | memoryview) -> Array:
    where, shape, datatype, dtype = _shape_and_dtype(tensor)
    count = element_count(shape, dtype.itemsize, where)
    if datatype == "BYTES":
        return bytes_tensor(split_bytes(bytes(data), where), shape, count, where)
    expected = count * dtype.itemsize
    if len(data) != expected:
        raise InvalidInput(
            f"{where}: {len(data)} bytes of binary data, expected {expected} "
            f"for shape {list(shape)} {datatype}"
        )
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def _decode_json_tensor(tensor: Mapping[str, Any]) -> Array:
    where, shape, datatype, dtype = _shape_and_dtype(tensor)
    data = tensor.get("data")
    if not isinstance(data, list):
        raise InvalidInput(f"{where}: 'data' must be a list (or use binary_data_size)")
    count = element_count(shape, dtype.itemsize, where)
    if datatype == "BYTES":
        items = _flatten(data, where)
        if not all(isinstance(item, str) for item in items):
            raise InvalidInput(f"{where}: BYTES elements must be JSON strings")
        return bytes_tensor([item.encode("utf-8") for item in items], shape, count, where)
    try:
        values = np.asarray(data)
    except ValueError:
        raise InvalidInput(f"{where}: 'data' is not a rectangular list of numbers") from None
    if values.size != count:
        raise InvalidInput(
            f"{where}: {values.size} values in data for shape {list(shape)} ({count} expected)"
        )
    return _convert(values, dtype, where, datatype).reshape(shape)


def _convert(values: Array, dtype: np.dtype[Any], where: str, datatype: str) -> Array:
    kinds = {"b": "b", "i": "biu", "u": "biu", "f": "biuf"}[dtype.kind]
    if values.size and values.dtype.kind not in kinds:
        raise InvalidInput(f"{where}: data of kind {values.dtype} cannot be {datatype}")
    converted = values.astype(dtype)
    if dtype.kind in "iu" and values.size and not np.array_equal(converted, values):
        raise InvalidInput(f"{where}: a value is out of range for {datatype}")
    return converted


def _flatten(data: list[Any], where: str) -> list[Any]:
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def _outputs(
    value: Any, parameters: Mapping[str, ParamValue], regions: SharedMemoryRegions | None
) -> tuple[tuple[str, ...], dict[str, int], OutputEncoding]:
    """The requested outputs' names, their class counts (classification), and how each travels back."""
    default = parameters.get(BINARY_DATA_OUTPUT, False)
    if not isinstance(default, bool):
        raise InvalidInput(f"parameter '{BINARY_DATA_OUTPUT}' must be a boolean")
    if value is None:
        return (), {}, OutputEncoding(default)
    if not isinstance(value, list):
        raise InvalidInput("'outputs' must be a list")
    names: list[str] = []
    binary: dict[str, bool] = {}
    shared: dict[str, SharedTensor] = {}
    requested: list[tuple[str, ParamValue | None]] = []
    for output in value:
        if not isinstance(output, dict) or not isinstance(output.get("name"), str):
            raise InvalidInput("each requested output must be a JSON object with a 'name'")
        name = output["name"]
        params = _parameters(output.get("parameters"), f"output '{name}'")
        requested.append((name, params.get(CLASSIFICATION_PARAMETER)))
        if (place := shared_tensor(regions, params, f"output '{name}'")) is not None:
            shared[name] = place
        flag = params.get(BINARY_DATA)
        if flag is not None:
            if not isinstance(flag, bool):
                raise InvalidInput(f"output '{name}': parameter '{BINARY_DATA}' must be a boolean")
            binary[name] = flag
        names.append(name)
    return tuple(names), output_classes(requested), OutputEncoding(default, binary, shared)


def encode_infer(response: InferenceResponse, encoding: OutputEncoding) -> tuple[bytes, int | None]:
    """The reply body and, when it carries binary outputs, the length of its JSON header."""
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, array in response.outputs.items():
        datatype = numpy_to_v2(array.dtype)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": [int(d) for d in array.shape]}
        place = encoding.shared.get(name)
        if place is not None:
            # Written there; the entry carries neither data nor parameters, as Triton's: its C++ client
            # (perf_analyzer) requires `binary_data_size` in any output's parameters.
            place.write(raw_bytes(array, datatype))
        elif encoding.is_binary(name):
            blob = raw_bytes(array, datatype)
            entry["parameters"] = {BINARY_DATA_SIZE: len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = _json_data(name, array, datatype)
        outputs.append(entry)
    reply = {
        "model_name": response.model_name,
        "model_version": response.model_version,
        "id": response.id,
        "outputs": outputs,
    }
    header = json.dumps(reply, separators=(",", ":")).encode()
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


def _json_data(name: str, array: Array, datatype: str) -> list[Any]:
    if datatype != "BYTES":
        values: list[Any] = array.ravel().tolist()
        return values
    items: list[str] = []
    for index, item in enumerate(array.reshape(-1)):
        if isinstance(item, str):
            items.append(item)
            continue
        try:
            items.append(bytes(item).decode("utf-8"))
        except UnicodeDecodeError:
            raise ModelExecutionError(
                f"output '{name}' element {index} is not UTF-8 and cannot be a JSON string; "
                "request it as binary data"
            ) from None
    return items


def message_json(message: Message) -> Any:
    """A protobuf message as Triton's REST API writes it: field names as in the proto, every field
    present (defaults too), enums by name, 64-bit integers as JSON numbers (not strings)."""
    document = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    _numbers(message.DESCRIPTOR, document)
    return document


def _numbers(descriptor: Any, document: dict[str, Any]) -> None:
    for fd in descriptor.fields:
        if fd.name not in document:
            continue
        value = document[fd.name]
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            value_field = fd.message_type.fields_by_name["value"]
            for key in value:
                value[key] = _number(value_field, value[key])
        elif fd.is_repeated:
            document[fd.name] = [_number(fd, item) for item in value]
        else:
            document[fd.name] = _number(fd, value)


def _number(fd: FieldDescriptor, value: Any) -> Any:
    if fd.message_type is not None and isinstance(value, dict):
        _numbers(fd.message_type, value)
        return value
    return int(value) if fd.type in _INT64 else value
