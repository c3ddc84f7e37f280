"""BYTES tensors reach an ONNX model byte for byte, or the request is refused naming the element.

onnxruntime's Python binding turns a `bytes` element into its repr ("b'he\\x00llo'"): every string sent
to an ONNX model used to arrive corrupted, silently. These tests send strings through a string
Identity model with tritonclient (raw contents) and raw gRPC (typed bytes_contents) and compare.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from serving.proto import inference_pb2 as pb
from serving.proto import inference_pb2_grpc
from tests.model_factory import STRING_IDENTITY_CONFIG, write_string_identity_model
from tests.servers import ServerProcess, serving

pytestmark = pytest.mark.integration

ROUND_TRIP = [
    b"",
    b"he\x00llo",
    b"\x00",
    b"trailing nul\x00",
    "héllo wörld ✓ 日本語 🚀".encode(),
    b"plain ascii",
    b"x" * 70_000,
]
NOT_UTF8 = [b"\xff\xfe", b"ok then \xc3", b"\xed\xa0\x80"]  # invalid start, truncated, a surrogate


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("repo")
    (root / "strings").mkdir()
    (root / "strings" / "config.pbtxt").write_text(STRING_IDENTITY_CONFIG)
    write_string_identity_model(root / "strings" / "1" / "model.onnx")
    yield from serving(root, tmp_path_factory.mktemp("strings") / "server.log")


def _infer(client: grpcclient.InferenceServerClient, items: list[bytes]) -> list[bytes]:
    data = np.empty((len(items), 1), dtype=object)
    data[:, 0] = items
    tensor = grpcclient.InferInput("x", list(data.shape), "BYTES")
    tensor.set_data_from_numpy(data)
    result = client.infer("strings", [tensor])
    return [bytes(item) for item in result.as_numpy("y").reshape(-1)]


def test_strings_round_trip_exactly_through_tritonclient(client: grpcclient.InferenceServerClient) -> None:
    assert _infer(client, ROUND_TRIP) == ROUND_TRIP  # one request of 7 rows (max_batch_size 8)
    for item in ROUND_TRIP:
        assert _infer(client, [item]) == [item], item[:40]


def test_typed_bytes_contents_round_trip_exactly(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.grpc_address) as channel:
        stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
        for item in ROUND_TRIP:
            request = pb.ModelInferRequest(model_name="strings")
            tensor = request.inputs.add(name="x", datatype="BYTES", shape=[1, 1])
            tensor.contents.bytes_contents.append(item)
            reply = stub.ModelInfer(request, timeout=30)
            raw = reply.raw_output_contents[0]
            assert int.from_bytes(raw[:4], "little") == len(item)
            assert raw[4:] == item


@pytest.mark.parametrize("bad", NOT_UTF8)
def test_invalid_utf8_is_refused_naming_the_element(
    client: grpcclient.InferenceServerClient, bad: bytes
) -> None:
    with pytest.raises(InferenceServerException) as caught:
        _infer(client, [b"fine", bad])
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "input 'x' element 1 is not valid UTF-8" in caught.value.message()


def test_a_refused_string_fails_only_its_own_request(server: ServerProcess) -> None:
    """Sent at once into a 20 ms batching window: the bad request must not take its batch-mates down."""
    results: dict[int, object] = {}

    def send(index: int, items: list[bytes]) -> None:
        with grpcclient.InferenceServerClient(server.grpc_address) as own:
            try:
                results[index] = _infer(own, items)
            except InferenceServerException as exc:
                results[index] = exc.status()

    batches = [[b"a\x00"], [b"\xff"], ["ü".encode()], [b""]]
    threads = [threading.Thread(target=send, args=(i, items)) for i, items in enumerate(batches)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results == {0: [b"a\x00"], 1: "StatusCode.INVALID_ARGUMENT", 2: ["ü".encode()], 3: [b""]}
