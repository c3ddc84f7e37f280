"""BYTES through a TorchScript model, end to end: the real server, tritonclient, Triton libtorch's convention.

The model appends SUFFIX to every string of its List[str] input; the server must hand it the exact UTF-8
text of each element (row-major) and return its List[str] as BYTES shaped (rows, 2), batching requests.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.servers import ServerProcess, serving
from tests.torch_string_models import SUFFIX, AppendSuffix, write_scripted

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning"),
]

MODEL = "torch_strings"
CONFIG = f"""
name: "{MODEL}"
platform: "pytorch_libtorch"
max_batch_size: 8
input [ {{ name: "x" data_type: TYPE_STRING dims: [ 2 ] }} ]
output [ {{ name: "y" data_type: TYPE_STRING dims: [ 2 ] }} ]
dynamic_batching {{ max_queue_delay_microseconds: 1000000 }}
parameters {{ key: "batching.strict_delay" value: {{ string_value: "true" }} }}
"""
MARK = SUFFIX.encode()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("repo")
    (root / MODEL).mkdir()
    (root / MODEL / "config.pbtxt").write_text(CONFIG)
    write_scripted(AppendSuffix(), root / MODEL / "1" / "model.pt")
    yield from serving(root, tmp_path_factory.mktemp("torch_strings") / "server.log")


def infer(client: grpcclient.InferenceServerClient, rows: list[tuple[bytes, bytes]]) -> np.ndarray:
    data = np.empty((len(rows), 2), dtype=object)
    for index, row in enumerate(rows):
        data[index, 0], data[index, 1] = row
    tensor = grpcclient.InferInput("x", list(data.shape), "BYTES")
    tensor.set_data_from_numpy(data)
    return client.infer(MODEL, [tensor]).as_numpy("y")


def test_strings_reach_the_model_and_come_back_exactly(client: grpcclient.InferenceServerClient) -> None:
    rows = [
        (b"", b"he\x00llo"),
        ("héllo wörld ✓ 日本語 🚀".encode(), b"\x00"),
        (b"x" * 70_000, b"trailing\x00"),
    ]
    y = infer(client, rows)
    assert y.shape == (3, 2)
    assert [bytes(item) for item in y.reshape(-1)] == [s + MARK for row in rows for s in row]


def test_requests_batched_together_each_get_their_own_rows(
    server: ServerProcess, client: grpcclient.InferenceServerClient
) -> None:
    """Four requests of 2 rows fill one batch of max_batch_size 8 (the 1 s delay holds the first ones)."""
    requests = [[(f"r{i}a".encode(), f"ü{i}\x00".encode()), (b"", f"{i}".encode())] for i in range(4)]
    before = client.get_inference_statistics(MODEL).model_stats[0]
    results: dict[int, object] = {}

    def send(index: int) -> None:
        with grpcclient.InferenceServerClient(server.grpc_address) as own:
            try:
                results[index] = [bytes(item) for item in infer(own, requests[index]).reshape(-1)]
            except InferenceServerException as exc:
                results[index] = exc

    threads = [threading.Thread(target=send, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results == {i: [s + MARK for row in requests[i] for s in row] for i in range(4)}
    after = client.get_inference_statistics(MODEL).model_stats[0]
    assert after.inference_count - before.inference_count == 8
    assert after.execution_count - before.execution_count == 1


def test_invalid_utf8_is_refused_before_the_model(client: grpcclient.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as caught:
        infer(client, [(b"fine", b"\xff")])
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "input 'x' element 1 is not valid UTF-8" in caught.value.message()
