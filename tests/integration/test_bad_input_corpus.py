"""A corpus of malformed ModelInfer requests, by class, through the real server over gRPC and HTTP: each
gets its exact status (and a message naming what is wrong), and a good request succeeds after each.

Run with `-s` to see the counts by class (docs/reliability.md, "Bad input")."""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest

from serving.proto import inference_pb2 as pb
from serving.proto import inference_pb2_grpc
from tests.integration.bad_input import (
    MAX_MESSAGE_BYTES,
    assert_good,
    good_request,
    http_infer,
    http_post,
    raw_caller,
    write_repository,
)
from tests.servers import ServerProcess, start_server

pytestmark = pytest.mark.integration

INVALID, NOT_FOUND, EXHAUSTED = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
)


@dataclass(frozen=True)
class Case:
    kind: str  # the class of mistake (docs/reliability.md counts by it)
    label: str
    build: Callable[[], pb.ModelInferRequest | bytes]  # bytes: sent as they are
    code: grpc.StatusCode
    fragment: str  # a part of the message that says what is wrong


def add(
    shape: list[int], raw: list[bytes] | None = None, datatype: str = "FP32", **fields: str
) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(
        model_name=fields.get("model", "add"), model_version=fields.get("version", "1")
    )
    request.inputs.add(name=fields.get("name", "x"), datatype=datatype, shape=shape)
    request.raw_input_contents.extend(raw if raw is not None else [bytes(4 * int(np.prod(shape)))])
    return request


def strings(raw: bytes, shape: list[int] | None = None) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="strings")
    request.inputs.add(name="x", datatype="BYTES", shape=shape or [1, 1])
    request.raw_input_contents.append(raw)
    return request


def with_(
    request: pb.ModelInferRequest, change: Callable[[pb.ModelInferRequest], object]
) -> pb.ModelInferRequest:
    change(request)
    return request


def typed(count: int) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="add")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 4]).contents.fp32_contents.extend([0.0] * count)
    return request


def inputs(*names: str) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="add")
    for name in names:
        request.inputs.add(name=name, datatype="FP32", shape=[1, 4])
        request.raw_input_contents.append(bytes(16))
    return request


def param(key: str, value: object, where: str = "request") -> pb.ModelInferRequest:
    request = good_request()
    target = request.parameters[key] if where == "request" else request.outputs.add(name="y").parameters[key]
    if isinstance(value, bool):
        target.bool_param = value
    elif isinstance(value, int):
        target.int64_param = value
    elif isinstance(value, float):
        target.double_param = value
    else:
        target.string_param = str(value)
    return request


GOOD = good_request().SerializeToString()

CASES = [
    # shape, datatype and byte-count mismatches
    Case(
        "mismatch", "shape", lambda: add([1, 5]), INVALID, "shape [1, 5] does not match the model's [-1, 4]"
    ),
    Case("mismatch", "rank", lambda: add([4]), INVALID, "shape [4] does not match"),
    Case("mismatch", "datatype", lambda: add([1, 4], [bytes(32)], "FP64"), INVALID, "FP64 does not match"),
    Case(
        "mismatch",
        "unknown datatype",
        lambda: add([1, 4], datatype="FP99"),
        INVALID,
        "unknown datatype 'FP99'",
    ),
    Case(
        "mismatch",
        "short raw",
        lambda: add([2, 4], [bytes(28)]),
        INVALID,
        "28 bytes of raw content, expected 32",
    ),
    Case("mismatch", "long raw", lambda: add([1, 4], [bytes(20)]), INVALID, "20 bytes of raw content"),
    Case("mismatch", "typed count", lambda: typed(3), INVALID, "3 values in contents"),
    Case(
        "mismatch",
        "typed wrong field",
        lambda: with_(typed(0), lambda r: r.inputs[0].contents.int_contents.extend([1] * 4)),
        INVALID,
        "0 values in contents",
    ),
    # negative or overflowing dimensions
    Case("dims", "negative", lambda: add([-1, 4], [b""]), INVALID, "negative dimension"),
    Case(
        "dims",
        "2^32 x 2^32",
        lambda: add([2**32, 2**32], [b""]),
        INVALID,
        "larger than any request can carry",
    ),
    Case("dims", "2^62 x 4", lambda: add([2**62, 4], [b""]), INVALID, "larger than any request can carry"),
    Case(
        "dims", "int64 max", lambda: add([2**63 - 1, 4], [b""]), INVALID, "larger than any request can carry"
    ),
    Case(
        "dims",
        "zero times huge",
        lambda: add([0, 2**40], [b""]),
        INVALID,
        "larger than any request can carry",
    ),
    Case("dims", "rank 100", lambda: add([1] * 100, [bytes(4)]), INVALID, "100 dimensions, more than 64"),
    Case("dims", "rank 100000", lambda: add([1] * 100_000, [bytes(4)]), INVALID, "100000 dimensions"),
    Case("dims", "int64 min", lambda: add([-(2**63), 4], [b""]), INVALID, "negative dimension"),
    # too many or too few raw contents; raw and typed both set
    Case(
        "raw count",
        "one too many",
        lambda: add([1, 4], [bytes(16), bytes(16)]),
        INVALID,
        "raw_input_contents has 2 entries",
    ),
    Case(
        "raw count",
        "none for two inputs",
        lambda: with_(inputs("x", "x2"), lambda r: r.ClearField("raw_input_contents")),
        INVALID,
        "unexpected input 'x2'",
    ),
    Case(
        "raw count",
        "one for two inputs",
        lambda: with_(inputs("x", "x"), lambda r: r.raw_input_contents.pop()),
        INVALID,
        "given twice",
    ),
    Case(
        "raw count",
        "no contents at all",
        lambda: with_(add([1, 4]), lambda r: r.ClearField("raw_input_contents")),
        INVALID,
        "0 values in contents",
    ),
    Case(
        "raw and typed",
        "both",
        lambda: with_(add([1, 4]), lambda r: r.inputs[0].contents.fp32_contents.extend([0.0] * 4)),
        INVALID,
        "contents field must not be specified",
    ),
    # missing, extra, duplicate inputs
    Case(
        "inputs", "missing", lambda: pb.ModelInferRequest(model_name="add"), INVALID, "expects input(s) ['x']"
    ),
    Case("inputs", "extra", lambda: inputs("x", "z"), INVALID, "unexpected input 'z'"),
    Case("inputs", "unknown only", lambda: inputs("z"), INVALID, "unexpected input 'z'"),
    Case("inputs", "duplicate", lambda: inputs("x", "x"), INVALID, "input 'x' is given twice"),
    Case(
        "inputs",
        "1000 inputs",
        lambda: inputs(*(f"x{i}" for i in range(1000))),
        INVALID,
        "1000 inputs, more than the 256",
    ),
    Case(
        "inputs",
        "50000 inputs, refused unparsed",
        lambda: with_(
            inputs(*(f"x{i}" for i in range(50_000))), lambda r: r.ClearField("raw_input_contents")
        ),
        INVALID,
        "more than 256 inputs",
    ),
    Case(
        "inputs",
        "1000 outputs",
        lambda: with_(good_request(), lambda r: [r.outputs.add(name="y") for _ in range(1000)]),
        INVALID,
        "1000 requested outputs",
    ),
    Case("inputs", "empty name", lambda: inputs(""), INVALID, "unexpected input ''"),
    # unknown requested outputs
    Case(
        "outputs",
        "unknown",
        lambda: with_(good_request(), lambda r: r.outputs.add(name="w")),
        INVALID,
        "unknown output 'w'",
    ),
    Case(
        "outputs",
        "unknown classified",
        lambda: with_(param("classification", 2, "output"), lambda r: setattr(r.outputs[0], "name", "w")),
        INVALID,
        "unknown output 'w'",
    ),
    # malformed BYTES length prefixes
    Case(
        "bytes",
        "prefix overruns",
        lambda: strings(struct.pack("<I", 2**32 - 1) + b"ab"),
        INVALID,
        "overruns the content",
    ),
    Case("bytes", "truncated prefix", lambda: strings(b"\x01\x00"), INVALID, "truncated in a length prefix"),
    Case(
        "bytes",
        "too few elements",
        lambda: strings(b"", [2, 1]),
        INVALID,
        "0 BYTES elements for shape [2, 1]",
    ),
    Case(
        "bytes",
        "too many elements",
        lambda: strings(struct.pack("<I", 1) + b"a" + struct.pack("<I", 1) + b"b"),
        INVALID,
        "2 BYTES elements",
    ),
    Case(
        "bytes",
        "trailing garbage",
        lambda: strings(struct.pack("<I", 1) + b"a" + b"\x00"),
        INVALID,
        "truncated in a length prefix",
    ),
    Case("bytes", "not UTF-8", lambda: strings(struct.pack("<I", 2) + b"\xff\xfe"), INVALID, "UTF-8"),
    # empty batch, batch above max_batch_size
    Case("batch", "empty", lambda: add([0, 4], [b""]), INVALID, "batch size must be at least 1, got 0"),
    Case("batch", "9 > 8", lambda: add([9, 4]), INVALID, "batch size 9 exceeds max_batch_size 8"),
    Case("batch", "huge", lambda: add([100000, 4], [b""]), INVALID, "expected 1600000"),
    # unknown model or version
    Case(
        "model/version",
        "unknown model",
        lambda: add([1, 4], model="nope", version=""),
        NOT_FOUND,
        "'nope' is not found",
    ),
    Case(
        "model/version",
        "unknown version",
        lambda: add([1, 4], version="9"),
        NOT_FOUND,
        "version 9 is not found",
    ),
    Case("model/version", "superscript two", lambda: add([1, 4], version="²"), INVALID, "version string '²'"),
    Case("model/version", "arabic-indic one", lambda: add([1, 4], version="١"), INVALID, "version string"),
    Case("model/version", "negative", lambda: add([1, 4], version="-1"), INVALID, "version string '-1'"),
    Case("model/version", "text", lambda: add([1, 4], version="latest"), INVALID, "version string 'latest'"),
    Case("model/version", "huge", lambda: add([1, 4], version="9" * 400), NOT_FOUND, "is not found"),
    Case(
        "model/version",
        "100 KB name",
        lambda: add([1, 4], model="n" * 100_000, version=""),
        NOT_FOUND,
        "is not found",
    ),
    # malformed parameters
    Case("parameters", "timeout as text", lambda: param("timeout", "soon"), INVALID, "parameter 'timeout'"),
    Case("parameters", "timeout negative", lambda: param("timeout", -5), INVALID, "parameter 'timeout'"),
    Case("parameters", "timeout as double", lambda: param("timeout", 1.5), INVALID, "parameter 'timeout'"),
    Case(
        "parameters",
        "routing key bool",
        lambda: param("routing_key", True),
        INVALID,
        "parameter 'routing_key'",
    ),
    Case(
        "parameters",
        "routing key double",
        lambda: param("routing_key", 0.5),
        INVALID,
        "parameter 'routing_key'",
    ),
    Case(
        "parameters",
        "classification text",
        lambda: param("classification", "many", "output"),
        INVALID,
        "classification",
    ),
    Case(
        "parameters",
        "classification negative",
        lambda: param("classification", -3, "output"),
        INVALID,
        "classification",
    ),
    Case(
        "parameters",
        "region without size",
        lambda: param("shared_memory_region", "nowhere", "output"),
        INVALID,
        "shared_memory_byte_size' is required",
    ),
    Case(
        "parameters",
        "unregistered region",
        lambda: with_(
            param("shared_memory_region", "nowhere", "output"),
            lambda r: setattr(r.outputs[0].parameters["shared_memory_byte_size"], "int64_param", 16),
        ),
        INVALID,
        "nowhere",
    ),
    Case(
        "parameters",
        "region size as text",
        lambda: with_(
            param("shared_memory_region", "r", "output"),
            lambda r: setattr(r.outputs[0].parameters["shared_memory_byte_size"], "string_param", "big"),
        ),
        INVALID,
        "shared_memory_byte_size",
    ),
    # oversized messages (the server takes at most MAX_MESSAGE_BYTES)
    Case(
        "oversized",
        "id",
        lambda: with_(good_request(), lambda r: setattr(r, "id", "i" * (MAX_MESSAGE_BYTES + 1))),
        EXHAUSTED,
        "",
    ),
    Case("oversized", "raw content", lambda: add([8, 4], [bytes(MAX_MESSAGE_BYTES + 1)]), EXHAUSTED, ""),
    # bytes that are no ModelInferRequest at all (gRPC's parse fails before any handler)
    Case("wire", "model name not UTF-8", lambda: b"\x0a\x02\xff\xfe" + GOOD, INVALID, "bad UTF-8"),
    Case(
        "wire",
        "input name not UTF-8",
        lambda: GOOD + b"\x2a\x04\x0a\x02\xc3\x28",
        INVALID,
        "not a valid inference.ModelInferRequest",
    ),
    Case("wire", "garbage", lambda: b"\xff\xff\xff\xff", INVALID, "not a valid inference.ModelInferRequest"),
    Case("wire", "truncated", lambda: GOOD[:-3], INVALID, "not a valid inference.ModelInferRequest"),
    Case(
        "wire",
        "length past the end",
        lambda: b"\x3a\xff\xff\xff\x0f",
        INVALID,
        "not a valid inference.ModelInferRequest",
    ),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repo = write_repository(tmp_path_factory.mktemp("repo"))
    log = tmp_path_factory.mktemp("bad_input") / "server.log"
    process = start_server(repo, log, "--max-message-bytes", str(MAX_MESSAGE_BYTES))
    yield process
    assert process.stop() == 0, process.log()[-3000:]
    assert "Traceback" not in process.log(), process.log()[-3000:]


@pytest.fixture(scope="module")
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    options = [("grpc.max_send_message_length", 4 * MAX_MESSAGE_BYTES)]
    with grpc.insecure_channel(server.grpc_address, options=options) as channel:
        yield channel


def test_grpc_corpus(channel: grpc.Channel, server: ServerProcess) -> None:
    stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
    send = raw_caller(channel)
    wrong: list[str] = []
    for case in CASES:
        built = case.build()
        data = built if isinstance(built, bytes) else built.SerializeToString()
        try:
            send(data, timeout=20)
            wrong.append(f"{case.kind}/{case.label}: accepted")
        except grpc.RpcError as error:
            code, details = error.code(), error.details() or ""
            if code != case.code or case.fragment not in details or len(details) > 2000:
                wrong.append(f"{case.kind}/{case.label}: {code} {details[:300]!r}")
        assert_good(stub)  # the server still serves a good request after each
    assert server.process.poll() is None
    counts = Counter(case.kind for case in CASES)
    print(f"\nbad input over gRPC: {len(CASES)} requests by class: {dict(counts)}")
    assert not wrong, "\n".join(wrong)


HTTP_GOOD = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [0, 1, 2, 3]}]}


def doc(shape: object = (1, 4), data: object = (0, 1, 2, 3), **extra: object) -> dict[str, object]:
    tensor = {
        "name": extra.pop("name", "x"),
        "datatype": extra.pop("datatype", "FP32"),
        "shape": list(shape) if isinstance(shape, tuple) else shape,
        "data": list(data) if isinstance(data, tuple | range) else data,
    }
    return {"inputs": [tensor], **extra}


HTTP_CASES: list[tuple[str, str, str, object, str, int, str]] = [
    # (class, label, model, document, version, status, fragment)
    ("mismatch", "shape", "add", doc((1, 5), range(5)), "", 400, "shape [1, 5] does not match"),
    ("mismatch", "data count", "add", doc((1, 4), (1, 2)), "", 400, "2 values in data"),
    ("mismatch", "datatype", "add", doc(datatype="FP99"), "", 400, "unknown datatype"),
    ("mismatch", "not numbers", "add", doc(data=("a", "b", "c", "d")), "", 400, "cannot be FP32"),
    ("dims", "negative", "add", doc((-1, 4), ()), "", 400, "negative dimension"),
    ("dims", "2^32 x 2^32", "add", doc((2**32, 2**32), ()), "", 400, "larger than any request can carry"),
    ("dims", "beyond int64", "add", doc((2**70, 4), ()), "", 400, "larger than any request can carry"),
    ("dims", "not integers", "add", doc(("a", 4)), "", 400, "'shape' must be a list of integers"),
    ("inputs", "duplicate", "add", {"inputs": HTTP_GOOD["inputs"] * 2}, "", 400, "given twice"),
    ("inputs", "extra", "add", doc(name="z"), "", 400, "unexpected input 'z'"),
    ("inputs", "missing", "add", {"inputs": []}, "", 400, "expects input(s)"),
    ("inputs", "1000 inputs", "add", {"inputs": HTTP_GOOD["inputs"] * 1000}, "", 400, "1000 inputs"),
    ("outputs", "unknown", "add", {**HTTP_GOOD, "outputs": [{"name": "w"}]}, "", 400, "unknown output 'w'"),
    ("batch", "empty", "add", doc((0, 4), ()), "", 400, "at least 1"),
    ("batch", "9 > 8", "add", doc((9, 4), [0] * 36), "", 400, "exceeds max_batch_size 8"),
    ("model/version", "unknown model", "nope", HTTP_GOOD, "", 404, "not found"),
    ("model/version", "unknown version", "add", HTTP_GOOD, "9", 404, "not found"),
    ("model/version", "superscript two", "add", HTTP_GOOD, "²", 400, "version string"),
    (
        "parameters",
        "timeout as text",
        "add",
        {**HTTP_GOOD, "parameters": {"timeout": "soon"}},
        "",
        400,
        "timeout",
    ),
    ("parameters", "nested value", "add", {**HTTP_GOOD, "parameters": {"a": [1]}}, "", 400, "parameter 'a'"),
    (
        "parameters",
        "binary output flag",
        "add",
        {**HTTP_GOOD, "parameters": {"binary_data_output": 3}},
        "",
        400,
        "binary_data_output",
    ),
]


def test_http_corpus(server: ServerProcess, channel: grpc.Channel) -> None:
    stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
    wrong: list[str] = []
    for kind, label, model, document, version, status, fragment in HTTP_CASES:
        code, body = http_infer(server.http_url, model, document, version)
        if code != status or fragment not in body:
            wrong.append(f"{kind}/{label}: {code} {body[:300]!r}")
        assert http_infer(server.http_url, "add", HTTP_GOOD)[0] == 200
    raw = [
        (
            "bytes",
            "binary size lies",
            b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1,4],"parameters":{"binary_data_size":99}}]}',
            "overruns",
        ),
        ("bytes", "unclaimed bytes", b'{"inputs":[]}' + bytes(8), "not claimed"),
        ("wire", "not JSON", b"\xff{", "not valid JSON"),
        ("wire", "JSON list", b"[1]", "JSON object"),
    ]
    for kind, label, body, fragment in raw:
        length = {"Inference-Header-Content-Length": str(len(body) - 8)} if label == "unclaimed bytes" else {}
        code, text = http_post(server.http_url, "/v2/models/add/infer", body, length)
        if code != 400 or fragment not in text:
            wrong.append(f"{kind}/{label}: {code} {text[:300]!r}")
    assert_good(stub)
    assert server.process.poll() is None
    counts = Counter([case[0] for case in HTTP_CASES] + [case[0] for case in raw])
    print(f"\nbad input over HTTP: {len(HTTP_CASES) + len(raw)} requests by class: {dict(counts)}")
    assert not wrong, "\n".join(wrong)


def test_malformed_requests_to_other_methods(channel: grpc.Channel) -> None:
    """Every method, not only ModelInfer, refuses bytes it cannot parse with INVALID_ARGUMENT."""
    stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
    for method in ("ModelReady", "ModelMetadata", "ModelConfig", "ModelStatistics", "RepositoryModelLoad"):
        with pytest.raises(grpc.RpcError) as info:
            raw_caller(channel, f"/inference.GRPCInferenceService/{method}")(b"\x0a\x02\xff\xfe", timeout=10)
        assert info.value.code() == INVALID, (method, info.value)
        assert "bad UTF-8" in (info.value.details() or "")
    assert stub.ModelReady(pb.ModelReadyRequest(name="add"), timeout=10).ready


def test_streamed_malformed_request_ends_the_stream_with_invalid_argument(channel: grpc.Channel) -> None:
    call = channel.stream_stream(
        "/inference.GRPCInferenceService/ModelStreamInfer",
        request_serializer=lambda b: b,
        response_deserializer=pb.ModelStreamInferResponse.FromString,
    )
    received: list[pb.ModelStreamInferResponse] = []
    with pytest.raises(grpc.RpcError) as info:
        for reply in call(iter([GOOD, b"\xff\xff\xff", GOOD]), timeout=10):
            received.append(reply)
    assert info.value.code() == INVALID, info.value
    assert "not a valid inference.ModelInferRequest" in (info.value.details() or "")
    assert [r.infer_response.model_name for r in received] == ["add"]  # the request before it was served


def test_max_inputs_per_request_flag(tmp_path: Path) -> None:
    repo = write_repository(tmp_path / "repo")
    process = start_server(repo, tmp_path / "server.log", "--max-inputs-per-request", "2")
    try:
        with grpc.insecure_channel(process.grpc_address) as channel:
            stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
            request = good_request()
            request.outputs.add(name="y")
            request.outputs.add(name="y")
            assert stub.ModelInfer(request, timeout=10).outputs  # two: at the limit
            request.outputs.add(name="y")
            with pytest.raises(grpc.RpcError) as info:
                stub.ModelInfer(request, timeout=10)
            assert info.value.code() == INVALID
            assert "3 requested outputs, more than the 2" in (info.value.details() or "")
    finally:
        assert process.stop() == 0, process.log()[-3000:]
