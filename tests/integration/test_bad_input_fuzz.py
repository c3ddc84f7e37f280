"""Property-based fuzzing (hypothesis) against one real server: ModelInferRequest fields (structured),
raw bytes as the serialized request of every GRPCInferenceService method, and the admin API
(serving.admin.ModelAdmin) with fuzzed fields. Never INTERNAL or UNKNOWN, never a hang (each call has a
timeout), never a crash (the server is alive and serves a good request at the end).

Reproducible in CI: derandomized, no example database. Run with `-s` to see the cases run and the
statuses they got (docs/reliability.md, "Bad input")."""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving.api.codec import set_parameter
from serving.proto import admin_pb2, inference_pb2, inference_pb2_grpc
from tests.integration.bad_input import (
    MAX_MESSAGE_BYTES,
    assert_good,
    good_request,
    raw_caller,
    write_repository,
)
from tests.servers import ServerProcess, start_server

pytestmark = pytest.mark.integration

SERVER_FAULTS = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED}
CALL_TIMEOUT_S = 10.0
FUZZ = settings(
    max_examples=1000,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
MODELS = ["add", "strings", "nope", ""]
NAMES = ["x", "y", "z", ""]
DATATYPES = ["FP32", "FP64", "INT32", "INT64", "BYTES", "BOOL", "UINT8", "FP16", "BF16", "fp32", "FP99"]
DIMS = st.one_of(
    st.integers(0, 10), st.integers(-(2**63), 2**63 - 1), st.sampled_from([2**31, 2**32, 2**62, -1])
)
STATUS: dict[str, Counter[str]] = {}


def record(kind: str, code: grpc.StatusCode) -> None:
    STATUS.setdefault(kind, Counter())[code.name] += 1


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repo = write_repository(tmp_path_factory.mktemp("repo"))
    log = tmp_path_factory.mktemp("fuzz") / "server.log"
    process = start_server(repo, log, "--max-message-bytes", str(MAX_MESSAGE_BYTES))
    yield process
    for kind, codes in STATUS.items():
        print(f"\nfuzz {kind}: {sum(codes.values())} cases, statuses {dict(codes)}")
    assert process.stop() == 0, process.log()[-3000:]


@pytest.fixture(scope="module")
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.grpc_address) as channel:
        yield channel


def send(call: grpc.UnaryUnaryMultiCallable, request: Any, kind: str) -> None:
    try:
        call(request, timeout=CALL_TIMEOUT_S)
        record(kind, grpc.StatusCode.OK)
    except grpc.RpcError as error:
        record(kind, error.code())
        assert error.code() not in SERVER_FAULTS, (error.code(), error.details())


def alive(server: ServerProcess, channel: grpc.Channel) -> None:
    assert server.process.poll() is None
    assert_good(inference_pb2_grpc.GRPCInferenceServiceStub(channel))


# ---- ModelInferRequest, structured ------------------------------------------------------------


@st.composite
def tensors(draw: st.DrawFn) -> tuple[inference_pb2.ModelInferRequest.InferInputTensor, bytes | None]:
    shape = draw(st.lists(DIMS, max_size=4) | st.sampled_from([[1, 4], [2, 4], [1, 1], [0, 4], [9, 4]]))
    datatype = draw(st.sampled_from(DATATYPES) | st.text(max_size=6))
    tensor = inference_pb2.ModelInferRequest.InferInputTensor(
        name=draw(st.sampled_from(NAMES) | st.text(max_size=8)), datatype=datatype, shape=shape
    )
    for key, value in draw(
        st.dictionaries(st.sampled_from(PARAMETER_KEYS), PARAMETER_VALUES, max_size=2)
    ).items():
        set_parameter(tensor.parameters[key], value)
    raw: bytes | None = draw(
        st.none()
        | st.binary(max_size=64)
        | st.just(bytes(16))
        | st.builds(lambda n, s: struct.pack("<I", n) + s, st.integers(0, 2**32 - 1), st.binary(max_size=8))
    )
    if draw(st.booleans()):
        tensor.contents.fp32_contents.extend(draw(st.lists(st.floats(width=32), max_size=8)))
    if draw(st.booleans()):
        tensor.contents.bytes_contents.extend(draw(st.lists(st.binary(max_size=8), max_size=4)))
    return tensor, raw


PARAMETER_KEYS = [
    "timeout",
    "routing_key",
    "classification",
    "binary_data",
    "shared_memory_region",
    "shared_memory_byte_size",
    "shared_memory_offset",
    "priority",
    "sequence_id",
    "x",
]
PARAMETER_VALUES = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True),
    st.text(max_size=10),
    st.sampled_from([1_000_000, 0, -1]),
)


@st.composite
def infer_requests(draw: st.DrawFn) -> inference_pb2.ModelInferRequest:
    request = inference_pb2.ModelInferRequest(
        model_name=draw(st.sampled_from(MODELS) | st.text(max_size=8)),
        model_version=draw(st.sampled_from(["", "1", "2", "9", "²", "-1", "01"]) | st.text(max_size=4)),
        id=draw(st.text(max_size=8)),
    )
    raws = []
    for tensor, raw in draw(st.lists(tensors(), max_size=3)):
        request.inputs.append(tensor)
        raws.append(raw)
    if draw(st.booleans()):
        request.raw_input_contents.extend(r if r is not None else b"" for r in raws)
    for name in draw(st.lists(st.sampled_from(NAMES) | st.text(max_size=4), max_size=2)):
        output = request.outputs.add(name=name)
        for key, value in draw(
            st.dictionaries(st.sampled_from(PARAMETER_KEYS), PARAMETER_VALUES, max_size=2)
        ).items():
            set_parameter(output.parameters[key], value)
    for key, value in draw(
        st.dictionaries(st.sampled_from(PARAMETER_KEYS), PARAMETER_VALUES, max_size=3)
    ).items():
        if key == "timeout" and isinstance(value, int) and 0 <= value < 10_000_000:
            continue  # a short queue timeout is not a mistake: DEADLINE_EXCEEDED would be right
        set_parameter(request.parameters[key], value)
    return request


def test_fuzz_model_infer_fields(server: ServerProcess, channel: grpc.Channel) -> None:
    stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)

    @FUZZ
    @given(infer_requests())
    def check(request: inference_pb2.ModelInferRequest) -> None:
        send(stub.ModelInfer, request, "ModelInferRequest fields")

    check()
    alive(server, channel)


# ---- raw bytes at the gRPC layer ---------------------------------------------------------------

GOOD = good_request().SerializeToString()
METHODS = [m.name for m in inference_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods]
UNARY = [m for m in METHODS if m != "ModelStreamInfer"]
ADMIN = admin_pb2.DESCRIPTOR.services_by_name["ModelAdmin"]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(GOOD)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip" and at < len(data):
            data[at] ^= draw(st.integers(1, 255))
        elif action == "cut":
            del data[at : at + draw(st.integers(1, 16))]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


def test_fuzz_raw_bytes(server: ServerProcess, channel: grpc.Channel) -> None:
    callers = {m: raw_caller(channel, f"/inference.GRPCInferenceService/{m}") for m in UNARY}
    # RepositoryModelLoad/Unload would change what the server serves; their parsing is the same code.
    harmless = [m for m in UNARY if not m.startswith("Repository") or m == "RepositoryIndex"]
    for method in ADMIN.methods:
        path = f"{ADMIN.full_name}/{method.name}"
        callers[path] = raw_caller(channel, f"/{path}")
        harmless.append(path)

    @FUZZ
    @given(st.binary(max_size=256) | mutated(), st.sampled_from(["ModelInfer"] * 3 + harmless))
    def check(data: bytes, method: str) -> None:
        send(callers[method], data, "raw bytes")

    check()
    alive(server, channel)


# ---- the admin API -----------------------------------------------------------------------------

SCALARS: dict[int, st.SearchStrategy[Any]] = {
    FieldDescriptor.TYPE_STRING: st.sampled_from(["add", "add", "strings", *MODELS]) | st.text(max_size=10),
    FieldDescriptor.TYPE_UINT32: st.integers(0, 2**32 - 1) | st.integers(0, 3),
    FieldDescriptor.TYPE_DOUBLE: st.floats(allow_nan=True, allow_infinity=True) | st.floats(0, 1),
    FieldDescriptor.TYPE_BOOL: st.booleans(),
}


@st.composite
def messages(draw: st.DrawFn, descriptor: Descriptor) -> dict[str, Any]:
    """Field values for `descriptor` (the admin requests have scalars, maps of scalars and optionals)."""
    values: dict[str, Any] = {}
    for field in descriptor.fields:
        if field.name != "model" and not draw(st.booleans()):
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            key, value = (SCALARS[f.type] for f in field.message_type.fields)
            values[field.name] = draw(st.dictionaries(key, value, max_size=4))
        else:
            values[field.name] = draw(SCALARS[field.type])
    return values


def test_fuzz_admin_api(server: ServerProcess, channel: grpc.Channel) -> None:
    @FUZZ
    @given(
        st.sampled_from(list(ADMIN.methods)).flatmap(lambda m: st.tuples(st.just(m), messages(m.input_type)))
    )
    def check(case: tuple[Any, dict[str, Any]]) -> None:
        method, fields = case
        request_type: type[Message] = getattr(admin_pb2, method.input_type.name)
        call = channel.unary_unary(
            f"/{ADMIN.full_name}/{method.name}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=lambda b: b,
        )
        send(call, request_type(**fields), "admin requests")

    check()
    alive(server, channel)
