"""proto ⇄ numpy codec: raw and typed contents, BYTES framing, exact byte-count checks."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import numpy as np
import pytest

from serving.api.codec import build_infer_request, decode_request, encode_response
from serving.core.request import InferenceRequest, InferenceResponse, RequestSchema
from serving.errors import InvalidInput
from serving.lifecycle.repository import ModelSpec, parse_config
from serving.proto import inference_pb2 as pb


@pytest.mark.parametrize(
    "dtype", [np.float32, np.float64, np.float16, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64, np.bool_]
)
def test_raw_round_trip_every_numeric_dtype(dtype: type) -> None:
    array = (np.arange(12) % 3).astype(dtype).reshape(3, 4)
    decoded = decode_request(build_infer_request("m", {"a": array}, model_version="2", request_id="r1"))
    assert decoded.model_name == "m" and decoded.model_version == "2" and decoded.id == "r1"
    assert decoded.inputs["a"].dtype == array.dtype
    np.testing.assert_array_equal(decoded.inputs["a"], array)


def test_raw_input_is_not_copied() -> None:
    request = build_infer_request("m", {"a": np.ones((2, 2), np.float32)})
    decoded = decode_request(request)
    assert not decoded.inputs["a"].flags.writeable  # a view on the message's bytes


def test_typed_contents() -> None:
    request = pb.ModelInferRequest(model_name="m")
    tensor = request.inputs.add(name="a", datatype="INT32", shape=[2, 2])
    tensor.contents.int_contents.extend([1, 2, 3, 4])
    flags = request.inputs.add(name="b", datatype="BOOL", shape=[2])
    flags.contents.bool_contents.extend([True, False])
    decoded = decode_request(request)
    np.testing.assert_array_equal(decoded.inputs["a"], np.array([[1, 2], [3, 4]], np.int32))
    np.testing.assert_array_equal(decoded.inputs["b"], np.array([True, False]))


def test_bytes_framing_both_ways() -> None:
    items = np.array([b"", b"abc", "\u00e9".encode()], dtype=object)
    request = build_infer_request("m", {"s": items})
    assert request.raw_input_contents[0] == b"".join(struct.pack("<I", len(x)) + x for x in items)
    decoded = decode_request(request)
    assert list(decoded.inputs["s"]) == list(items)
    reply = encode_response(InferenceResponse("m", "1", "", {"s": items}))
    assert reply.raw_output_contents[0] == request.raw_input_contents[0]
    assert reply.outputs[0].datatype == "BYTES" and list(reply.outputs[0].shape) == [3]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r.raw_input_contents.__setitem__(0, r.raw_input_contents[0][:-1]), "input 'a': 31 bytes of raw content, expected 32"),
        (lambda r: r.raw_input_contents.append(b""), "raw_input_contents has 2 entries but the request names 1 inputs"),
        (lambda r: setattr(r.inputs[0], "datatype", "FP8"), "input 'a': unknown datatype 'FP8'"),
        (lambda r: r.inputs[0].shape.__setitem__(0, -2), "negative dimension"),
        (lambda r: (r.inputs.append(r.inputs[0]), r.raw_input_contents.append(r.raw_input_contents[0])), "given twice"),
    ],
)
def test_malformed_requests_name_the_input(mutate: object, message: str) -> None:
    request = build_infer_request("m", {"a": np.zeros((2, 4), np.float32)})
    mutate(request)  # type: ignore[operator]
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(").replace(")", r"\)")):
        decode_request(request)


def test_truncated_bytes_are_rejected() -> None:
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="s", datatype="BYTES", shape=[1])
    request.raw_input_contents.append(struct.pack("<I", 10) + b"abc")
    with pytest.raises(InvalidInput, match="overruns"):
        decode_request(request)


def test_fp16_has_no_typed_field() -> None:
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="h", datatype="FP16", shape=[1])
    with pytest.raises(InvalidInput, match="only be sent as raw_input_contents"):
        decode_request(request)


def test_response_is_raw_and_cast_to_config_dtype() -> None:
    logits = np.array([[1.5, -2.0]], dtype=np.float16)
    outputs = RequestSchema(_spec()).conform_outputs({"logits": logits}, {})  # the data plane's step
    reply = encode_response(InferenceResponse("m", "3", "id7", outputs))
    assert reply.model_version == "3" and reply.id == "id7"
    assert not reply.outputs[0].HasField("contents")
    assert reply.outputs[0].datatype == "FP32"
    np.testing.assert_array_equal(np.frombuffer(reply.raw_output_contents[0], np.float32), [1.5, -2.0])


def test_parameters_decode_every_kind() -> None:
    request = build_infer_request(
        "m", {"a": np.zeros((1, 1), np.float32)}, parameters={"routing_key": "u1", "timeout": 500, "flag": True, "ratio": 0.5}
    )
    assert decode_request(request).parameters == {"routing_key": "u1", "timeout": 500, "flag": True, "ratio": 0.5}


CONFIG = """
name: "m"
max_batch_size: 4
input [ { name: "a" data_type: TYPE_FP32 dims: [ 2 ] } ]
output [ { name: "logits" data_type: TYPE_FP32 dims: [ 2 ] } ]
"""


def _spec() -> ModelSpec:
    return parse_config(CONFIG, Path("/repo/m"))


def test_request_carries_routing_key_deadline_and_queue_timeout() -> None:
    request = build_infer_request("m", {"a": np.zeros((1, 2), np.float32)}, parameters={"timeout": 2500})
    before = time.monotonic()
    decoded = decode_request(request, [("x-routing-key", "user-7")], 3.0)
    assert decoded.routing_key == "user-7"
    assert decoded.deadline is not None and before + 3.0 <= decoded.deadline <= time.monotonic() + 3.0
    assert decoded.timeout_s == pytest.approx(2.5e-3)
    undecided = decode_request(build_infer_request("m", {"a": np.zeros((1, 2), np.float32)}))
    assert (undecided.routing_key, undecided.deadline, undecided.timeout_s) == ("", None, None)


def test_routing_key_parameter_wins_over_metadata() -> None:
    request = build_infer_request("m", {"a": np.zeros((1, 2), np.float32)}, parameters={"routing_key": "p"})
    assert decode_request(request, [("x-routing-key", "meta")]).routing_key == "p"


@pytest.mark.parametrize("value", [-1, "soon", 1.5, True])
def test_bad_timeout_parameter_is_refused_by_the_codec(value: object) -> None:
    request = build_infer_request("m", {"a": np.zeros((1, 2), np.float32)}, parameters={"timeout": value})  # type: ignore[dict-item]
    with pytest.raises(InvalidInput, match="parameter 'timeout' must be a non-negative integer"):
        decode_request(request)


@pytest.mark.parametrize(
    ("inputs", "outputs", "message"),
    [
        ({"b": np.zeros((1, 2), np.float32)}, (), r"unexpected input 'b' for model 'm'; it expects \['a'\]"),
        ({}, (), r"model 'm' expects input\(s\) \['a'\], not given"),
        ({"a": np.zeros((1, 2), np.int32)}, (), "datatype INT32 does not match the model's FP32"),
        ({"a": np.zeros((1, 3), np.float32)}, (), r"shape \[1, 3\] does not match the model's \[-1, 2\]"),
        ({"a": np.zeros((5, 2), np.float32)}, (), "batch size 5 exceeds max_batch_size 4"),
        ({"a": np.zeros((0, 2), np.float32)}, (), "batch size must be at least 1, got 0"),
        ({"a": np.zeros((1, 2), np.float32)}, ("nope",), "unknown output 'nope' requested from model 'm'"),
    ],
)
def test_schema_validates_against_the_config(
    inputs: dict[str, np.ndarray], outputs: tuple[str, ...], message: str
) -> None:
    schema = RequestSchema(_spec())
    with pytest.raises(InvalidInput, match=message):
        schema.validate(InferenceRequest("m", "", "", inputs, requested_outputs=outputs))
    schema.validate(InferenceRequest("m", "", "", {"a": np.zeros((4, 2), np.float32)}))
