"""KServe v2 REST bodies ⇄ domain: JSON (nested or flat) for every datatype, binary tensor data, errors."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import pytest

from serving.api.http.json_codec import OutputEncoding, decode_infer, encode_infer, message_json
from serving.core.request import InferenceResponse
from serving.errors import InvalidInput
from serving.proto import inference_pb2 as pb
from serving.shared_memory.regions import SharedMemoryRegions
from serving.types import V2_TO_NUMPY


def _body(*inputs: dict[str, Any], **extra: Any) -> bytes:
    return json.dumps({"inputs": list(inputs), **extra}).encode()


@pytest.mark.parametrize("datatype", [d for d in V2_TO_NUMPY if d != "BYTES"])
def test_json_every_datatype_nested_and_flat(datatype: str) -> None:
    dtype = V2_TO_NUMPY[datatype]
    expected = (np.arange(6) % 2).astype(dtype).reshape(2, 3)
    for data in (expected.tolist(), expected.ravel().tolist()):
        tensor = {"name": "a", "shape": [2, 3], "datatype": datatype, "data": data}
        request, _ = decode_infer(_body(tensor), None, "m", "1")
        assert request.inputs["a"].dtype == dtype
        np.testing.assert_array_equal(request.inputs["a"], expected)
        body, header = encode_infer(InferenceResponse("m", "1", "", dict(request.inputs)), OutputEncoding())
        assert header is None
        (out,) = json.loads(body)["outputs"]
        assert out == {"name": "a", "datatype": datatype, "shape": [2, 3], "data": expected.ravel().tolist()}


def test_bytes_as_json_strings_and_binary() -> None:
    items = [b"", b"\x00", "日本語 ✓".encode()]
    tensor = {"name": "s", "shape": [3], "datatype": "BYTES", "data": [i.decode() for i in items]}
    request, _ = decode_infer(_body(tensor), None, "m", "")
    assert list(request.inputs["s"]) == items
    blob = b"".join(struct.pack("<I", len(i)) + i for i in items)
    header = _body(
        {"name": "s", "shape": [3], "datatype": "BYTES", "parameters": {"binary_data_size": len(blob)}}
    )
    request, _ = decode_infer(header + blob, str(len(header)), "m", "")
    assert list(request.inputs["s"]) == items
    body, length = encode_infer(InferenceResponse("m", "1", "", dict(request.inputs)), OutputEncoding(True))
    assert length is not None and body[length:] == blob
    assert json.loads(body[:length])["outputs"][0]["parameters"] == {"binary_data_size": len(blob)}


def test_binary_inputs_in_order_and_output_choice() -> None:
    a, b = np.arange(4, dtype=np.float32), np.arange(3, dtype=np.int64)
    header = _body(
        {"name": "a", "shape": [4], "datatype": "FP32", "parameters": {"binary_data_size": 16}},
        {"name": "j", "shape": [1], "datatype": "INT32", "data": [7]},
        {"name": "b", "shape": [3], "datatype": "INT64", "parameters": {"binary_data_size": 24}},
        outputs=[{"name": "a", "parameters": {"binary_data": True}}, {"name": "b"}],
        parameters={"routing_key": "k1", "timeout": 100},
    )
    request, encoding = decode_infer(header + a.tobytes() + b.tobytes(), str(len(header)), "m", "3", "hdr")
    np.testing.assert_array_equal(request.inputs["a"], a)
    np.testing.assert_array_equal(request.inputs["b"], b)
    assert request.inputs["j"].tolist() == [7]
    assert request.requested_outputs == ("a", "b") and request.model_version == "3"
    assert request.routing_key == "k1" and request.timeout_s == pytest.approx(1e-4)  # parameter wins
    assert encoding.is_binary("a") and not encoding.is_binary("b")
    body, length = encode_infer(InferenceResponse("m", "3", "", {"a": a, "b": b}), encoding)
    assert length is not None and body[length:] == a.tobytes()
    assert json.loads(body[:length])["outputs"][1]["data"] == [0, 1, 2]


def test_routing_key_header_applies_without_parameter() -> None:
    tensor = {"name": "a", "shape": [1], "datatype": "FP32", "data": [1.0]}
    request, _ = decode_infer(_body(tensor), None, "m", "", "user-9")
    assert request.routing_key == "user-9" and request.deadline is None


@pytest.mark.parametrize(
    ("tensor", "message"),
    [
        ({"name": "a", "shape": [2], "datatype": "FP8", "data": [1, 2]}, "unknown datatype 'FP8'"),
        ({"name": "a", "shape": [2], "datatype": "INT8", "data": [1, 300]}, "out of range for INT8"),
        ({"name": "a", "shape": [2], "datatype": "INT32", "data": [1.5, 2]}, "cannot be INT32"),
        ({"name": "a", "shape": [2], "datatype": "BOOL", "data": [1, 0]}, "cannot be BOOL"),
        ({"name": "a", "shape": [3], "datatype": "FP32", "data": [1, 2]}, "2 values in data for shape [3]"),
        ({"name": "a", "shape": [2], "datatype": "FP32", "data": [[1], [2, 3]]}, "not a rectangular list"),
        ({"name": "a", "shape": [-1], "datatype": "FP32", "data": []}, "negative dimension"),
        ({"name": "a", "shape": "2", "datatype": "FP32", "data": [1, 2]}, "'shape' must be a list"),
        ({"name": "a", "shape": [1], "datatype": "BYTES", "data": [b"x".hex(), "y"]}, "2 BYTES elements"),
    ],
)
def test_bad_json_tensors_name_the_input(tensor: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message.replace("[", r"\[").replace("]", r"\]")):
        decode_infer(_body(tensor), None, "m", "")


def test_bad_binary_layout() -> None:
    header = _body({"name": "a", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}})
    with pytest.raises(InvalidInput, match="Inference-Header-Content-Length 999"):
        decode_infer(header, "999", "m", "")
    with pytest.raises(InvalidInput, match="4 bytes of binary data, expected 8"):
        bad = _body({"name": "a", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 4}})
        decode_infer(bad + b"\0" * 4, str(len(bad)), "m", "")
    with pytest.raises(InvalidInput, match="output 'y': parameter 'classification' must be a positive"):
        tensor = {"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}
        decode_infer(
            _body(tensor, outputs=[{"name": "y", "parameters": {"classification": 0}}]), None, "m", ""
        )


def test_classification_and_shared_memory_parameters_are_decoded() -> None:
    tensor = {"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}
    request, _ = decode_infer(
        _body(tensor, outputs=[{"name": "y", "parameters": {"classification": 3}}]), None, "m", ""
    )
    assert request.output_classes == {"y": 3} and request.requested_outputs == ("y",)
    with pytest.raises(InvalidInput, match="shared memory region 'r' is not registered"):
        shm = {"shared_memory_region": "r", "shared_memory_byte_size": 4}
        decode_infer(_body(tensor, outputs=[{"name": "y", "parameters": shm}]), None, "m", "", "", SharedMemoryRegions())


def test_message_json_writes_64_bit_integers_as_numbers() -> None:
    stats = pb.ModelStatisticsResponse()
    stats.model_stats.add(name="m", version="1", inference_count=5).inference_stats.success.ns = 123
    document = message_json(stats)
    (one,) = document["model_stats"]
    assert one["inference_count"] == 5 and one["inference_stats"]["success"] == {"count": 0, "ns": 123}
    meta = pb.ModelMetadataResponse(name="m")
    meta.inputs.add(name="x", datatype="FP32", shape=[-1, 4])
    assert message_json(meta)["inputs"][0]["shape"] == [-1, 4]
