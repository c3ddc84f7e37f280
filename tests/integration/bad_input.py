"""Shared by the bad-input tests: a repository of tiny models, a server on it, and the checks."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote

import grpc
import numpy as np

from serving.api.codec import build_infer_request
from serving.proto import inference_pb2 as pb
from serving.proto import inference_pb2_grpc
from tests.model_factory import STRING_IDENTITY_CONFIG, write_add_repository, write_string_identity_model

INFER = "/inference.GRPCInferenceService/ModelInfer"
MAX_MESSAGE_BYTES = 1 << 20
CLIENT_ERRORS = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAVAILABLE,  # a model that exists but is not loaded (none here)
}


def write_repository(root: Path) -> Path:
    """`add` (versions 1 and 2: y = x + version, FP32 [-1, 4], max_batch_size 8) and `strings` (BYTES
    identity [-1, 1])."""
    write_add_repository(root, "add", versions=(1, 2))
    (root / "strings").mkdir(parents=True, exist_ok=True)
    (root / "strings" / "config.pbtxt").write_text(STRING_IDENTITY_CONFIG)
    write_string_identity_model(root / "strings" / "1" / "model.onnx")
    return root


def good_request() -> pb.ModelInferRequest:
    return build_infer_request("add", {"x": np.arange(8, dtype=np.float32).reshape(2, 4)}, model_version="1")


def assert_good(stub: inference_pb2_grpc.GRPCInferenceServiceStub) -> None:
    reply = stub.ModelInfer(good_request(), timeout=10)
    y = np.frombuffer(reply.raw_output_contents[0], np.float32).reshape(2, 4)
    np.testing.assert_array_equal(y, np.arange(8, dtype=np.float32).reshape(2, 4) + 1)


def raw_caller(channel: grpc.Channel, method: str = INFER) -> grpc.UnaryUnaryMultiCallable:
    """A call that sends bytes as they are and returns the reply's bytes (identity serializers)."""
    return channel.unary_unary(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)


def http_post(
    base_url: str, path: str, body: bytes, headers: dict[str, str] | None = None
) -> tuple[int, str]:
    request = urllib.request.Request(base_url + path, data=body, method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, reply.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


def http_infer(base_url: str, model: str, document: object, version: str = "") -> tuple[int, str]:
    path = f"/v2/models/{quote(model)}" + (f"/versions/{quote(version)}" if version else "") + "/infer"
    return http_post(base_url, path, json.dumps(document).encode())
