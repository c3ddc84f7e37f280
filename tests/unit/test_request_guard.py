"""The pre-parse scan of large ModelInferRequest messages (serving/api/request_guard.too_many_entries)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serving.api.codec import build_infer_request
from serving.api.request_guard import MalformedRequest, safe_deserializer, too_many_entries
from serving.cli import build_parser, settings_from
from serving.config import ServerSettings
from serving.proto import inference_pb2 as pb


def many(count: int, field: str) -> bytes:
    request = build_infer_request("add", {"x": np.zeros((1, 4), np.float32)})
    for i in range(count):
        if field == "inputs":
            request.inputs.add(name=f"x{i}", datatype="FP32", shape=[1, 4])
        elif field == "outputs":
            request.outputs.add(name=f"y{i}")
        else:
            request.parameters[f"p{i}"].int64_param = i
    return request.SerializeToString()


def test_counts_each_repeated_field_against_the_limit() -> None:
    assert too_many_entries(many(9, "inputs"), 10) == ""
    assert "more than 10 inputs" in too_many_entries(many(10, "inputs"), 10)
    assert "more than 10 requested outputs" in too_many_entries(many(11, "outputs"), 10)
    assert "more than 10 parameters" in too_many_entries(many(11, "parameters"), 10)


def test_a_large_valid_request_is_not_refused_and_parses() -> None:
    data = build_infer_request("add", {"x": np.zeros((8, 3, 224, 224), np.float32)}).SerializeToString()
    assert too_many_entries(data, 256) == ""
    parsed = safe_deserializer(pb.ModelInferRequest, 256)(data)
    assert isinstance(parsed, pb.ModelInferRequest) and parsed.model_name == "add"


def test_the_deserializer_refuses_a_large_message_of_many_inputs_without_parsing() -> None:
    data = many(100_000, "inputs")
    refused = safe_deserializer(pb.ModelInferRequest, 256)(data)
    assert isinstance(refused, MalformedRequest) and "more than 256 inputs" in refused.reason


@settings(max_examples=2000, derandomize=True, database=None, deadline=None)
@given(st.binary(max_size=300), st.integers(1, 8))
def test_arbitrary_bytes_never_raise(data: bytes, limit: int) -> None:
    assert isinstance(too_many_entries(data, limit), str)
    assert isinstance(
        safe_deserializer(pb.ModelInferRequest, limit)(data), pb.ModelInferRequest | MalformedRequest
    )


def test_max_inputs_per_request_is_a_validated_flag(tmp_path: Path) -> None:
    args = ["serve", "--model-repository", str(tmp_path), "--max-inputs-per-request", "7"]
    assert settings_from(build_parser().parse_args(args)).max_inputs_per_request == 7
    assert ServerSettings(model_repository=tmp_path).max_inputs_per_request == 256
    with pytest.raises(ValueError, match="max_inputs_per_request: must be >= 1"):
        ServerSettings(model_repository=tmp_path, max_inputs_per_request=0)
