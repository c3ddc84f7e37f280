"""Request bodies: what goes on the wire for metadata-driven, file and sample inputs, keys appended."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from loadtests.inputs import InputError, InputSpec, build_bodies, parse_shape_overrides
from loadtests.wire import ModelMeta, TensorMeta, decode_request, encode_routing_key, model_version_of
from serving.proto import inference_pb2 as pb

DIGITS = ModelMeta(
    "digits",
    ("1", "2"),
    "onnx",
    (TensorMeta("input", "FP32", (-1, 64)),),
    (TensorMeta("probabilities", "FP32", (-1, 10)),),
)


def meta(*inputs: TensorMeta) -> ModelMeta:
    return ModelMeta("m", ("1",), "x", inputs, ())


def test_random_inputs_have_the_models_dtype_and_shape_with_the_batch() -> None:
    bodies = build_bodies(DIGITS, "2", 4, InputSpec(variants=3), seed=0)
    assert len(bodies) == 3 and len(set(bodies)) == 3
    request = decode_request(bodies[0])
    assert (request.model_name, request.model_version) == ("digits", "2")
    (tensor,) = request.inputs
    assert (tensor.name, tensor.datatype, list(tensor.shape)) == ("input", "FP32", [4, 64])
    values = np.frombuffer(request.raw_input_contents[0], dtype="<f4")
    assert values.size == 256 and 0.0 <= values.min() and values.max() < 1.0


@pytest.mark.parametrize(
    "datatype, itemsize",
    [("BOOL", 1), ("UINT8", 1), ("INT16", 2), ("INT64", 8), ("FP16", 2), ("FP64", 8), ("BF16", 2)],
)
def test_every_fixed_size_datatype(datatype: str, itemsize: int) -> None:
    request = decode_request(
        build_bodies(meta(TensorMeta("x", datatype, (2, 3))), "", 1, InputSpec(variants=1), 0)[0]
    )
    assert len(request.raw_input_contents[0]) == 6 * itemsize


def test_bytes_elements_are_length_prefixed() -> None:
    request = decode_request(
        build_bodies(meta(TensorMeta("s", "BYTES", (-1, 2))), "", 3, InputSpec(variants=1), 0)[0]
    )
    raw, pos, items = request.raw_input_contents[0], 0, []
    while pos < len(raw):
        (length,) = struct.unpack_from("<I", raw, pos)
        items.append(raw[pos + 4 : pos + 4 + length])
        pos += 4 + length
    assert len(items) == 6 and all(len(item) == 16 for item in items)


def test_dynamic_dims_take_shape_overrides() -> None:
    image = meta(TensorMeta("image", "UINT8", (-1, 3, -1, -1)))
    spec = InputSpec(shapes=parse_shape_overrides(["image=3,32,32"]), variants=1)
    assert list(decode_request(build_bodies(image, "", 2, spec, 0)[0]).inputs[0].shape) == [2, 3, 32, 32]
    assert list(decode_request(build_bodies(image, "", 1, InputSpec(variants=1), 0)[0]).inputs[0].shape) == [
        1,
        3,
        1,
        1,
    ]
    with pytest.raises(InputError, match="does not fit"):
        build_bodies(image, "", 1, InputSpec(shapes={"image": (4, 32, 32)}), 0)
    with pytest.raises(InputError, match="NAME=D1"):
        parse_shape_overrides(["image"])


def test_batch_on_a_model_without_batch_dimension_is_refused() -> None:
    with pytest.raises(InputError, match="no batch dimension"):
        build_bodies(meta(TensorMeta("x", "FP32", (4,))), "", 2, InputSpec(), 0)


def test_npz_inputs_by_shape_for_a_one_input_model(tmp_path: Path) -> None:
    x = np.arange(10 * 64, dtype=np.float32).reshape(10, 64)
    np.savez(tmp_path / "test_set.npz", X_test=x, y_test=np.arange(10))
    bodies = build_bodies(DIGITS, "", 4, InputSpec(str(tmp_path / "test_set.npz")), 0)
    assert len(bodies) == 3  # ceil(10 / 4) requests of 4 consecutive samples, wrapping around
    last = np.frombuffer(decode_request(bodies[2]).raw_input_contents[0], dtype="<f4").reshape(4, 64)
    np.testing.assert_array_equal(last, x[[8, 9, 0, 1]])


def test_npz_inputs_by_name_and_npy(tmp_path: Path) -> None:
    np.savez(tmp_path / "named.npz", input=np.ones((3, 64), dtype=np.float64), other=np.zeros((3, 64)))
    request = decode_request(build_bodies(DIGITS, "", 1, InputSpec(str(tmp_path / "named.npz")), 0)[0])
    assert np.frombuffer(request.raw_input_contents[0], dtype="<f4").tolist() == [1.0] * 64
    np.save(tmp_path / "one.npy", np.full(64, 2.0, dtype=np.float32))  # a single sample
    request = decode_request(build_bodies(DIGITS, "", 2, InputSpec(str(tmp_path / "one.npy")), 0)[0])
    assert list(request.inputs[0].shape) == [2, 64]


def test_files_that_do_not_fit_are_explained(tmp_path: Path) -> None:
    np.savez(tmp_path / "bad.npz", a=np.ones((3, 63)), b=np.ones((3, 63)))
    with pytest.raises(InputError, match="no array for input 'input'"):
        build_bodies(DIGITS, "", 1, InputSpec(str(tmp_path / "bad.npz")), 0)
    np.savez(tmp_path / "int.npz", input=np.ones((3, 64), dtype=np.complex64))
    with pytest.raises(InputError, match="is FP32"):
        build_bodies(DIGITS, "", 1, InputSpec(str(tmp_path / "int.npz")), 0)
    with pytest.raises(InputError, match="does not exist"):
        build_bodies(DIGITS, "", 1, InputSpec(str(tmp_path / "missing.npz")), 0)


def test_sample_data_from_a_model_repository(tmp_path: Path) -> None:
    (tmp_path / "digits").mkdir()
    np.savez(
        tmp_path / "digits" / "test_set.npz", X_test=np.ones((5, 64), dtype=np.float32), y_test=np.arange(5)
    )
    bodies = build_bodies(DIGITS, "", 1, InputSpec(f"sample:{tmp_path}"), 0)
    assert len(bodies) == 5
    with pytest.raises(InputError, match="no sample data"):
        build_bodies(DIGITS, "", 1, InputSpec(f"sample:{tmp_path / 'nowhere'}"), 0)


def test_a_routing_key_appended_to_serialised_bytes_becomes_a_parameter() -> None:
    body = build_bodies(DIGITS, "", 1, InputSpec(variants=1), 0)[0]
    request = decode_request(body + encode_routing_key("user-42"))
    assert request.parameters["routing_key"].string_param == "user-42"
    assert request.inputs[0].name == "input" and len(request.raw_input_contents[0]) == 256


def test_the_served_version_is_read_without_parsing_outputs() -> None:
    reply = pb.ModelInferResponse(model_name="digits", model_version="17", id="abc")
    reply.outputs.add(name="probabilities", datatype="FP32", shape=[1, 10])
    reply.raw_output_contents.append(b"\x01" * 40)
    reply.parameters["x"].int64_param = 5
    assert model_version_of(reply.SerializeToString()) == "17"
    assert model_version_of(pb.ModelInferResponse(model_name="m").SerializeToString()) == ""
    assert (
        model_version_of(pb.ModelInferRequest(model_name="m", model_version="3").SerializeToString()) == "3"
    )
