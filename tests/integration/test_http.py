"""KServe v2 over HTTP against the real server: raw HTTP (http.client) and tritonclient.http.

One server holds `add` (versions 1 and 2: y = x + version), `slow` (a 3 s batching delay and a queue
of one, to fill it) and `strings` (a string Identity model).
"""

from __future__ import annotations

import http.client
import json
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.model_factory import (
    STRING_IDENTITY_CONFIG,
    add_model_config,
    write_add_repository,
    write_string_identity_model,
)
from tests.servers import ServerProcess, start_server

pytestmark = pytest.mark.integration

SLOW_BATCHING = """
dynamic_batching {
  preferred_batch_size: [ 8 ]
  max_queue_delay_microseconds: 3000000
  default_queue_policy { max_queue_size: 1 }
}
parameters { key: "batching.strict_delay" value: { string_value: "true" } }
"""
STRINGS = [b"", b"\x00", b"he\x00llo", "héllo wörld ✓ 日本語 🚀".encode(), b"plain"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root: Path = tmp_path_factory.mktemp("repo")
    write_add_repository(root, "add", versions=(1, 2))
    write_add_repository(root, "spare")
    write_add_repository(root, "slow", config=add_model_config("slow", batching=SLOW_BATCHING))
    (root / "strings").mkdir()
    (root / "strings" / "config.pbtxt").write_text(STRING_IDENTITY_CONFIG)
    write_string_identity_model(root / "strings" / "1" / "model.onnx")
    process = start_server(root, tmp_path_factory.mktemp("http") / "server.log")
    assert process.http_address is not None
    yield process
    assert process.stop() == 0, process.log()[-3000:]


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> httpclient.InferenceServerClient:
    assert server.http_address is not None
    return httpclient.InferenceServerClient(server.http_address)


def call(
    server: ServerProcess,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    assert server.http_address is not None
    host, port = server.http_address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(method, path, body, headers or {})
        reply = conn.getresponse()
        return reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read()
    finally:
        conn.close()


def call_json(server: ServerProcess, method: str, path: str, document: Any = None) -> tuple[int, Any]:
    body = None if document is None else json.dumps(document).encode()
    status, _, data = call(server, method, path, body, {"Content-Type": "application/json"})
    return status, json.loads(data) if data else None


def test_health_metadata_config(server: ServerProcess) -> None:
    assert call(server, "GET", "/v2/health/live")[0] == 200
    assert call(server, "GET", "/v2/health/ready")[0] == 200
    status, meta = call_json(server, "GET", "/v2")
    assert status == 200 and meta["name"] == "serving" and "binary_tensor_data" in meta["extensions"]
    status, model = call_json(server, "GET", "/v2/models/add")
    assert status == 200
    assert model["versions"] == ["1", "2"] and model["platform"] == "onnxruntime_onnx"
    assert model["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    status, config = call_json(server, "GET", "/v2/models/add/versions/1/config")
    assert status == 200 and config["max_batch_size"] == 8 and config["input"][0]["dims"] == [4]
    assert config["instance_group"][0]["kind"] == "KIND_CPU"
    assert call(server, "GET", "/v2/models/add/ready")[0] == 200
    assert call(server, "GET", "/v2/models/add/versions/2/ready")[0] == 200
    assert call(server, "GET", "/v2/models/add/versions/9/ready")[0] == 400
    assert call(server, "GET", "/v2/models/nope/ready")[0] == 400


def _json_infer(x: Any, shape: list[int], path: str = "/v2/models/add/infer") -> dict[str, Any]:
    return {"id": "r1", "inputs": [{"name": "x", "shape": shape, "datatype": "FP32", "data": x}]}


def test_json_infer_nested_and_flat(server: ServerProcess) -> None:
    nested = [[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]
    status, reply = call_json(server, "POST", "/v2/models/add/versions/1/infer", _json_infer(nested, [2, 4]))
    assert status == 200, reply
    assert reply["model_name"] == "add" and reply["model_version"] == "1" and reply["id"] == "r1"
    (out,) = reply["outputs"]
    assert out == {"name": "y", "datatype": "FP32", "shape": [2, 4], "data": [2, 3, 4, 5, 6, 7, 8, 9]}
    flat = [1.0, 2.0, 3.0, 4.0]
    status, reply = call_json(server, "POST", "/v2/models/add/infer", _json_infer(flat, [1, 4]))
    assert status == 200 and reply["model_version"] == "2"  # the highest READY version
    assert reply["outputs"][0]["data"] == [3.0, 4.0, 5.0, 6.0]


def test_binary_infer(server: ServerProcess) -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    header = json.dumps(
        {
            "inputs": [
                {"name": "x", "shape": [2, 4], "datatype": "FP32", "parameters": {"binary_data_size": 32}}
            ],
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
        }
    ).encode()
    headers = {
        "Inference-Header-Content-Length": str(len(header)),
        "Content-Type": "application/octet-stream",
    }
    status, reply_headers, body = call(
        server, "POST", "/v2/models/add/versions/1/infer", header + x.tobytes(), headers
    )
    assert status == 200, body
    length = int(reply_headers["inference-header-content-length"])
    document = json.loads(body[:length])
    (out,) = document["outputs"]
    assert out["parameters"] == {"binary_data_size": 32} and out["shape"] == [2, 4] and "data" not in out
    np.testing.assert_array_equal(np.frombuffer(body[length:], np.float32).reshape(2, 4), x + 1)


def test_bytes_round_trip_json_and_binary(server: ServerProcess) -> None:
    texts = [s.decode() for s in STRINGS]
    request = {"inputs": [{"name": "x", "shape": [len(texts), 1], "datatype": "BYTES", "data": texts}]}
    status, reply = call_json(server, "POST", "/v2/models/strings/infer", request)
    assert status == 200, reply
    assert reply["outputs"][0]["data"] == texts and reply["outputs"][0]["datatype"] == "BYTES"
    blob = b"".join(struct.pack("<I", len(s)) + s for s in STRINGS)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": [len(STRINGS), 1],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(blob)},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    headers = {"Inference-Header-Content-Length": str(len(header))}
    status, reply_headers, body = call(server, "POST", "/v2/models/strings/infer", header + blob, headers)
    assert status == 200, body
    assert body[int(reply_headers["inference-header-content-length"]) :] == blob


@pytest.mark.parametrize(
    ("path", "document", "status", "fragment"),
    [
        ("/v2/models/nope/infer", _json_infer([1.0] * 4, [1, 4]), 404, "Request for unknown model: 'nope' is not found"),
        ("/v2/models/add/versions/7/infer", _json_infer([1.0] * 4, [1, 4]), 404, "Request for unknown model: 'add' version 7 is not found"),
        ("/v2/models/add/infer", _json_infer([1.0] * 3, [1, 3]), 400, "does not match the model's [-1, 4]"),
        ("/v2/models/add/infer", _json_infer([1.0] * 3, [1, 4]), 400, "3 values in data for shape [1, 4]"),
        ("/v2/models/add/infer", _json_infer(["a"] * 4, [1, 4]), 400, "cannot be FP32"),
        ("/v2/models/add/infer", _json_infer([1.0] * 36, [9, 4]), 400, "exceeds max_batch_size 8"),
        ("/v2/models/add/infer", {"inputs": []}, 400, "expects input(s) ['x'], not given"),
        ("/v2/models/add/infer", {"no": "inputs"}, 400, "needs an 'inputs' list"),
    ],
)
def test_errors_carry_triton_statuses(
    server: ServerProcess, path: str, document: Any, status: int, fragment: str
) -> None:
    got, reply = call_json(server, "POST", path, document)
    assert got == status and fragment in reply["error"], reply


def test_malformed_bodies_and_routes(server: ServerProcess) -> None:
    status, _, body = call(server, "POST", "/v2/models/add/infer", b"{not json")
    assert status == 400 and "not valid JSON" in json.loads(body)["error"]
    header = b'{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":16}}]}'
    headers = {"Inference-Header-Content-Length": str(len(header))}
    status, _, body = call(server, "POST", "/v2/models/add/infer", header + b"\0" * 12, headers)
    assert status == 400 and "overruns" in json.loads(body)["error"]
    status, _, body = call(server, "POST", "/v2/models/add/infer", header + b"\0" * 20, headers)
    assert status == 400 and "not claimed" in json.loads(body)["error"]
    status, _, body = call(server, "GET", "/v2/nothing/here")
    assert status == 404 and "error" in json.loads(body)
    status, _, body = call(
        server,
        "POST",
        "/v2/models/strings/infer",
        json.dumps({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "BYTES", "data": [1]}]}).encode(),
    )
    assert status == 400 and "JSON strings" in json.loads(body)["error"]


def test_full_queue_is_503(server: ServerProcess) -> None:
    document = _json_infer([1.0] * 4, [1, 4])
    first: list[tuple[int, Any]] = []
    waiting = threading.Thread(
        target=lambda: first.append(call_json(server, "POST", "/v2/models/slow/infer", document))
    )
    waiting.start()
    time.sleep(0.5)  # it waits in the queue (size 1) for a fuller batch
    status, reply = call_json(server, "POST", "/v2/models/slow/infer", document)
    assert status == 503 and "queue is full" in reply["error"], reply
    waiting.join(30)
    assert first[0][0] == 200 and first[0][1]["outputs"][0]["data"] == [2.0] * 4


def test_statistics_and_repository(server: ServerProcess) -> None:
    call_json(server, "POST", "/v2/models/add/versions/1/infer", _json_infer([0.0] * 4, [1, 4]))
    status, stats = call_json(server, "GET", "/v2/models/add/versions/1/stats")
    assert status == 200
    (one,) = stats["model_stats"]
    assert one["name"] == "add" and one["version"] == "1" and one["inference_count"] >= 1
    assert one["inference_stats"]["success"]["count"] >= 1  # numbers, not protobuf JSON strings
    status, everything = call_json(server, "GET", "/v2/models/stats")
    assert {(s["name"], s["version"]) for s in everything["model_stats"]} >= {("add", "1"), ("add", "2")}
    status, index = call_json(server, "POST", "/v2/repository/index", {"ready": True})
    assert status == 200 and {"name": "spare", "version": "1", "state": "READY", "reason": ""} in index
    assert call(server, "POST", "/v2/repository/models/spare/unload")[0] == 200
    assert call(server, "GET", "/v2/models/spare/ready")[0] == 400
    status, reply = call_json(server, "GET", "/v2/models/spare")
    assert status in (404, 503) and "spare" in reply["error"]
    assert call(server, "POST", "/v2/repository/models/spare/load", b"{}")[0] == 200
    assert call(server, "GET", "/v2/models/spare/ready")[0] == 200
    status, reply = call_json(server, "POST", "/v2/repository/models/ghost/load")
    assert status >= 400 and "ghost" in reply["error"]


def test_tritonclient_http(client: httpclient.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("add", "1")
    assert client.get_model_metadata("add")["inputs"][0]["shape"] == [-1, 4]
    assert client.get_model_config("add", "2")["max_batch_size"] == 8
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    for binary in (True, False):
        tensor = httpclient.InferInput("x", [2, 4], "FP32")
        tensor.set_data_from_numpy(x, binary_data=binary)
        outputs = [httpclient.InferRequestedOutput("y", binary_data=binary)]
        result = client.infer("add", [tensor], model_version="1", outputs=outputs)
        np.testing.assert_array_equal(result.as_numpy("y"), x + 1)
    strings = np.array([[s] for s in STRINGS], dtype=object)
    for binary in (True, False):
        tensor = httpclient.InferInput("x", list(strings.shape), "BYTES")
        tensor.set_data_from_numpy(strings, binary_data=binary)
        got = client.infer("strings", [tensor]).as_numpy("y")  # no outputs named: binary_data_output
        assert got is not None and [bytes(v) for v in got.reshape(-1)] == STRINGS
    stats = client.get_inference_statistics("add", "1")["model_stats"][0]
    assert stats["inference_count"] >= 2
    assert {m["name"] for m in client.get_model_repository_index()} >= {"add", "slow", "strings"}
    with pytest.raises(InferenceServerException) as info:
        client.infer("nope", [tensor])
    assert info.value.status() == "404" and "Request for unknown model: 'nope' is not found" in info.value.message()


def test_compressed_requests(client: httpclient.InferenceServerClient) -> None:
    x = np.ones((1, 4), dtype=np.float32)
    tensor = httpclient.InferInput("x", [1, 4], "FP32")
    tensor.set_data_from_numpy(x)
    for algorithm in ("gzip", "deflate"):
        result = client.infer("add", [tensor], model_version="1", request_compression_algorithm=algorithm)
        np.testing.assert_array_equal(result.as_numpy("y"), x + 1)


def test_body_over_max_message_bytes_is_413(tmp_path: Path) -> None:
    root = write_add_repository(tmp_path / "repo")
    process = start_server(root, tmp_path / "server.log", "--max-message-bytes", "4096")
    try:
        document = _json_infer([0.5] * 4 * 8, [8, 4])
        document["padding"] = "x" * 5000
        status, reply = call_json(process, "POST", "/v2/models/add/infer", document)
        assert status == 413 and "Maximum request body size 4096" in reply["error"], reply
        assert call_json(process, "POST", "/v2/models/add/infer", _json_infer([0.5] * 4, [1, 4]))[0] == 200
    finally:
        assert process.stop() == 0


def test_http_off(tmp_path: Path) -> None:
    root = write_add_repository(tmp_path / "repo")
    process = start_server(root, tmp_path / "server.log", "--http-port", "-1")
    try:
        assert process.http_address is None and "http=off" in process.log()
    finally:
        assert process.stop() == 0


def _requests_total(server: ServerProcess, labels: str) -> float:
    from urllib.request import urlopen

    with urlopen(server.metrics_url, timeout=10) as reply:
        text = reply.read().decode()
    for line in text.splitlines():
        if line.startswith(f"serving_requests_total{{{labels}}} "):
            return float(line.split()[-1])
    return 0.0


def test_http_requests_are_counted_like_grpc_ones(server: ServerProcess) -> None:
    ok = 'code="OK",model="add",version="1"'
    missing = 'code="NOT_FOUND",model="_unknown",version="_unknown"'
    before_ok, before_missing = _requests_total(server, ok), _requests_total(server, missing)
    assert (
        call_json(server, "POST", "/v2/models/add/versions/1/infer", _json_infer([0.0] * 4, [1, 4]))[0] == 200
    )
    assert call_json(server, "POST", "/v2/models/ghost/infer", _json_infer([0.0] * 4, [1, 4]))[0] == 404
    assert _requests_total(server, ok) == before_ok + 1
    assert _requests_total(server, missing) == before_missing + 1


def test_sigterm_lets_a_running_http_request_finish(tmp_path: Path) -> None:
    root = write_add_repository(
        tmp_path / "repo", "slow", config=add_model_config("slow", batching=SLOW_BATCHING)
    )
    process = start_server(root, tmp_path / "server.log")
    replies: list[tuple[int, Any]] = []
    document = _json_infer([1.0] * 4, [1, 4])
    running = threading.Thread(
        target=lambda: replies.append(call_json(process, "POST", "/v2/models/slow/infer", document))
    )
    running.start()
    time.sleep(0.5)  # queued, waiting out the 3 s batching delay
    started = time.monotonic()
    assert process.stop() == 0, process.log()[-3000:]
    running.join(30)
    assert replies and replies[0][0] == 200 and replies[0][1]["outputs"][0]["data"] == [2.0] * 4, replies
    assert time.monotonic() - started < 30
