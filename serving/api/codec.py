"""KServe v2 protobuf ⇄ domain types (serving/core/request.py).

Inputs arrive either as `raw_input_contents` (one bytes blob per input, in order: what tritonclient
and perf_analyzer send) or as typed `contents`; both decode to numpy arrays, raw ones without a
copy (`np.frombuffer`, read-only). Replies always use `raw_output_contents`: perf_analyzer crashes on
typed contents. BYTES elements are a 4-byte little-endian length followed by the bytes.
"""

from __future__ import annotations

import math
import struct
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from serving.core.classification import CLASSIFICATION_PARAMETER, class_count
from serving.core.request import InferenceRequest, InferenceResponse, ParamValue
from serving.errors import InvalidInput
from serving.proto import inference_pb2 as pb
from serving.quoting import clip
from serving.shared_memory.regions import SharedMemoryRegions
from serving.shared_memory.tensors import SharedTensor, shared_tensor
from serving.types import V2_TO_NUMPY, Array, numpy_to_v2

# No tensor can hold more bytes than this (a message is at most 2 GiB); larger shapes are refused.
MAX_TENSOR_BYTES = 2**31
MAX_RANK = 64  # numpy's limit on dimensions
# Inputs, outputs and raw contents one request may name (--max-inputs-per-request by default).
MAX_INPUTS_PER_REQUEST = 256
ROUTING_KEY_PARAMETER = "routing_key"  # sticky routing (see docs/traffic-policy.md)
ROUTING_KEY_METADATA = "x-routing-key"  # the same as gRPC metadata or an HTTP header
# Triton's per-request queue timeout parameter, in microseconds (honoured when the model's queue
# policy has allow_timeout_override).
TIMEOUT_PARAMETER = "timeout"
Metadata = Sequence[tuple[str, Any]]  # gRPC invocation metadata: (key, value) pairs

# datatype → the InferTensorContents field that carries it when typed.
CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def decode_parameters(params: Mapping[str, pb.InferParameter]) -> dict[str, ParamValue]:
    decoded: dict[str, ParamValue] = {}
    for key, param in params.items():
        choice = param.WhichOneof("parameter_choice")
        if choice is not None:
            decoded[key] = getattr(param, choice)
    return decoded


def decode_request(
    request: pb.ModelInferRequest,
    metadata: Metadata = (),
    time_remaining: float | None = None,
    regions: SharedMemoryRegions | None = None,
) -> InferenceRequest:
    """Raise InvalidInput, naming the input, when a tensor's bytes do not match its shape and datatype.
    `metadata`: the call's gRPC metadata (`x-routing-key` applies unless the request has a `routing_key`
    parameter); `time_remaining`: seconds left before the call's deadline (None: no deadline);
    `regions`: the registered shared-memory regions that inputs may name (Triton's extension)."""
    shared = {
        tensor.name: place
        for tensor in request.inputs
        if tensor.parameters  # no parameters (the usual case): nothing to decode, not in shared memory
        and (
            place := shared_tensor(
                regions, decode_parameters(tensor.parameters), f"input '{clip(tensor.name)}'"
            )
        )
    }
    raw = request.raw_input_contents
    if raw:
        _refuse_mixed_contents(request)
    expected_raw = len(request.inputs) - len(shared)
    if raw and len(raw) != expected_raw:
        raise InvalidInput(
            f"raw_input_contents has {len(raw)} entries but the request names {expected_raw} inputs "
            "outside shared memory"
        )
    inputs: dict[str, Array] = {}
    next_raw = iter(raw)
    for tensor in request.inputs:
        if tensor.name in inputs:
            raise InvalidInput(f"input '{clip(tensor.name)}' is given twice")
        place = shared.get(tensor.name)
        data = place.read() if place is not None else (next(next_raw) if raw else None)
        inputs[tensor.name] = _decode_tensor(tensor, data)
    parameters = decode_parameters(request.parameters)
    return InferenceRequest(
        model_name=request.model_name,
        model_version=request.model_version,
        id=request.id,
        inputs=inputs,
        requested_outputs=tuple(o.name for o in request.outputs),
        parameters=parameters,
        routing_key=routing_key(parameters, metadata_value(metadata, ROUTING_KEY_METADATA)),
        deadline=deadline_after(time_remaining),
        timeout_s=queue_timeout_s(parameters),
        output_classes=output_classes(
            (o.name, decode_parameters(o.parameters).get(CLASSIFICATION_PARAMETER))
            for o in request.outputs
            if o.parameters
        ),
    )


def output_classes(requested: Iterable[tuple[str, ParamValue | None]]) -> dict[str, int]:
    """name → class_count of the requested outputs that ask for classification."""
    return {name: class_count(value, name) for name, value in requested if value is not None}


def shared_outputs(
    request: pb.ModelInferRequest, regions: SharedMemoryRegions | None
) -> dict[str, SharedTensor]:
    """The requested outputs to be written to shared memory, by name; InvalidInput (before anything
    runs) when a region is not registered or the parameters are malformed."""
    return {
        output.name: place
        for output in request.outputs
        if output.parameters
        and (place := shared_tensor(regions, decode_parameters(output.parameters), f"output '{output.name}'"))
    }


def _refuse_mixed_contents(request: pb.ModelInferRequest) -> None:
    """Raw and typed contents in one request are refused, in Triton's words (clients match on them)."""
    for tensor in request.inputs:
        if tensor.HasField("contents"):
            raise InvalidInput(
                "contents field must not be specified when using raw_input_contents for "
                f"'{clip(tensor.name)}' for model '{clip(request.model_name)}'"
            )


def metadata_value(metadata: Metadata, key: str) -> str:
    """The first text value of `key` in gRPC metadata, or ""."""
    for name, value in metadata:
        if name == key and isinstance(value, str):
            return value
    return ""


def routing_key(parameters: Mapping[str, ParamValue], header: str = "") -> str:
    """The `routing_key` parameter, else the `x-routing-key` metadata or header `header`, else ""."""
    value = parameters.get(ROUTING_KEY_PARAMETER)
    if value is None:
        return header
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidInput(f"parameter '{ROUTING_KEY_PARAMETER}' must be a string, got {value!r}")
    return str(value) or header


def queue_timeout_s(parameters: Mapping[str, ParamValue]) -> float | None:
    """Triton's `timeout` parameter (microseconds) in seconds; None when not given."""
    value = parameters.get(TIMEOUT_PARAMETER)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(f"parameter '{TIMEOUT_PARAMETER}' must be a non-negative integer (microseconds)")
    return value / 1e6


def deadline_after(time_remaining: float | None) -> float | None:
    """The absolute deadline on time.monotonic() of a call with `time_remaining` seconds left."""
    return None if time_remaining is None else time.monotonic() + time_remaining


def _decode_tensor(tensor: pb.ModelInferRequest.InferInputTensor, raw: bytes | memoryview | None) -> Array:
    where = f"input '{clip(tensor.name)}'"
    dtype = V2_TO_NUMPY.get(tensor.datatype)
    if dtype is None:
        raise InvalidInput(f"{where}: unknown datatype '{tensor.datatype}'")
    shape = tuple(int(d) for d in tensor.shape)
    count = element_count(shape, dtype.itemsize, where)
    if tensor.datatype == "BYTES":
        items = split_bytes(raw, where) if raw is not None else list(tensor.contents.bytes_contents)
        return bytes_tensor(items, shape, count, where)
    if raw is not None:
        expected = count * dtype.itemsize
        if len(raw) != expected:
            raise InvalidInput(
                f"{where}: {len(raw)} bytes of raw content, expected {expected} for shape {list(shape)} "
                f"{tensor.datatype}"
            )
        return np.frombuffer(raw, dtype=dtype).reshape(shape)
    field = CONTENTS_FIELD.get(tensor.datatype)
    if field is None:
        raise InvalidInput(f"{where}: datatype {tensor.datatype} can only be sent as raw_input_contents")
    values: Sequence[Any] = getattr(tensor.contents, field)
    if len(values) != count:
        raise InvalidInput(
            f"{where}: {len(values)} values in contents for shape {list(shape)} ({count} expected)"
        )
    return np.asarray(values, dtype=dtype).reshape(shape)


def bytes_tensor(items: list[bytes], shape: tuple[int, ...], count: int, where: str) -> Array:
    """A BYTES tensor (object array of `bytes`) of `shape` from its `count` elements; InvalidInput when
    the client sent another number of elements. Every transport builds its BYTES inputs here."""
    if len(items) != count:
        raise InvalidInput(f"{where}: {len(items)} BYTES elements for shape {list(shape)} ({count} expected)")
    array = np.empty(count, dtype=object)
    array[:] = items
    return array.reshape(shape)


def element_count(shape: Sequence[int], itemsize: int, where: str) -> int:
    """The number of elements of `shape`, computed without overflow; InvalidInput when a dimension is
    negative or the tensor could not fit in any message (more than MAX_TENSOR_BYTES)."""
    if len(shape) > MAX_RANK:
        raise InvalidInput(f"{where}: shape has {len(shape)} dimensions, more than {MAX_RANK}")
    if any(d < 0 for d in shape):
        raise InvalidInput(f"{where}: shape {clip(str(list(shape)))} has a negative dimension")
    count = math.prod(shape)
    if count * itemsize > MAX_TENSOR_BYTES or any(d > MAX_TENSOR_BYTES for d in shape):
        raise InvalidInput(
            f"{where}: shape {clip(str(list(shape)))} is larger than any request can carry "
            f"({MAX_TENSOR_BYTES} bytes at most)"
        )
    return count


def check_names(
    request: pb.ModelInferRequest,
    limit: int = MAX_INPUTS_PER_REQUEST,
    expected: Collection[str] | None = None,
) -> None:
    """Cheap checks made before any tensor is decoded, so that a request naming a million inputs costs
    no more than one naming a few: at most `limit` inputs, outputs and raw contents; with `expected`
    (the model's input names, when it is loaded) no unknown or repeated input name."""
    for what, count in (
        ("inputs", len(request.inputs)),
        ("requested outputs", len(request.outputs)),
        ("raw_input_contents", len(request.raw_input_contents)),
    ):
        if count > limit:
            raise InvalidInput(
                f"the request has {count} {what}, more than the {limit} a request may have "
                "(--max-inputs-per-request)"
            )
    if expected is None:
        return
    seen: set[str] = set()
    for tensor in request.inputs:
        if tensor.name not in expected:
            raise InvalidInput(
                f"unexpected input '{clip(tensor.name)}' for model '{clip(request.model_name)}'; "
                f"it expects {sorted(expected)}"
            )
        if tensor.name in seen:
            raise InvalidInput(f"input '{clip(tensor.name)}' is given twice")
        seen.add(tensor.name)


def split_bytes(raw: bytes | memoryview, where: str) -> list[bytes]:
    items: list[bytes] = []
    offset, end = 0, len(raw)
    while offset < end:
        if offset + 4 > end:
            raise InvalidInput(f"{where}: BYTES content truncated in a length prefix")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > end:
            raise InvalidInput(f"{where}: BYTES element of {length} bytes overruns the content")
        items.append(bytes(raw[offset : offset + length]))
        offset += length
    return items


def join_bytes(array: Array) -> bytes:
    parts: list[bytes] = []
    for item in array.reshape(-1):
        data = item if isinstance(item, bytes) else str(item).encode()
        parts.append(struct.pack("<I", len(data)))
        parts.append(data)
    return b"".join(parts)


def encode_response(
    response: InferenceResponse, shared: Mapping[str, SharedTensor] | None = None
) -> pb.ModelInferResponse:
    """Outputs come in the config's datatypes already (the data plane conformed them). Those in `shared`
    are written to their shared-memory region and carry an empty raw entry in the reply, as Triton's:
    its C++ client (perf_analyzer) indexes raw_output_contents by output position without a check."""
    reply = pb.ModelInferResponse(
        model_name=response.model_name, model_version=response.model_version, id=response.id
    )
    shared = shared or {}
    for name, array in response.outputs.items():
        datatype = numpy_to_v2(array.dtype)
        tensor = reply.outputs.add(name=name, datatype=datatype)
        tensor.shape.extend(int(d) for d in array.shape)
        place = shared.get(name)
        if place is None:
            reply.raw_output_contents.append(raw_bytes(array, datatype))
            continue
        place.write(raw_bytes(array, datatype))
        reply.raw_output_contents.append(b"")
    return reply


def raw_bytes(array: Array, datatype: str) -> bytes:
    """A tensor's bytes as KServe v2 raw contents (and Triton's binary data): BYTES length-prefixed."""
    return join_bytes(array) if datatype == "BYTES" else np.ascontiguousarray(array).tobytes()


def build_infer_request(
    model_name: str,
    inputs: Mapping[str, Array],
    model_version: str = "",
    request_id: str = "",
    parameters: Mapping[str, ParamValue] | None = None,
) -> pb.ModelInferRequest:
    """A ModelInferRequest with raw contents; used by the shadow path and by tests."""
    request = pb.ModelInferRequest(model_name=model_name, model_version=model_version, id=request_id)
    for name, array in inputs.items():
        datatype = numpy_to_v2(array.dtype)
        tensor = request.inputs.add(name=name, datatype=datatype)
        tensor.shape.extend(int(d) for d in array.shape)
        request.raw_input_contents.append(raw_bytes(array, datatype))
    for key, value in (parameters or {}).items():
        set_parameter(request.parameters[key], value)
    return request


def set_parameter(param: pb.InferParameter, value: ParamValue) -> None:
    """Set an InferParameter from a Python value: bool, int (int64), float (double) or str."""
    if isinstance(value, bool):
        param.bool_param = value
    elif isinstance(value, int):
        param.int64_param = value
    elif isinstance(value, float):
        param.double_param = value
    else:
        param.string_param = value
