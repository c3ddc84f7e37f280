"""Backend failures through the real server: out-of-memory batches are retried as two halves, and a model
whose batches keep failing is reported unhealthy (ModelReady false, serving_model_version_healthy 0)
while the other models are untouched; one good batch heals it.

`fragile` is TorchScript: y = 2x, but a batch of more than 2 rows raises PyTorch's CUDA out-of-memory
text (what a real OOM says, as a RuntimeError from the interpreter), and a negative input raises
another error. Its config holds requests for 300 ms (Triton's fixed delay) so 4 of them meet in one batch.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from serving.batching.retry import UNHEALTHY_AFTER
from tests.model_factory import write_add_repository
from tests.servers import ServerProcess, serving
from tests.torch_string_models import write_scripted

pytestmark = pytest.mark.integration


class Fragile(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.size(0) > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if bool((x < 0).any()):
            raise RuntimeError("negative input: boom")
        return x * 2


FRAGILE_CONFIG = """
name: "fragile"
platform: "pytorch_libtorch"
max_batch_size: 8
input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } ]
dynamic_batching { max_queue_delay_microseconds: 300000 }
parameters { key: "batching.strict_delay" value: { string_value: "true" } }
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    repository = write_add_repository(tmp_path / "models", "add")
    write_scripted(Fragile(), repository / "fragile" / "1" / "model.pt")
    (repository / "fragile" / "config.pbtxt").write_text(FRAGILE_CONFIG)
    yield from serving(repository, tmp_path / "server.log")


def _infer(address: str, model: str, x: np.ndarray) -> np.ndarray:
    with grpcclient.InferenceServerClient(address) as client:
        tensor = grpcclient.InferInput("x", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        y = client.infer(model, [tensor]).as_numpy("y")
    assert y is not None
    return y


def _healthy_gauge(server: ServerProcess) -> str:
    with urllib.request.urlopen(server.metrics_url, timeout=10) as reply:
        text = reply.read().decode()
    return next(
        line for line in text.splitlines() if line.startswith('serving_model_version_healthy{model="fragile"')
    )


def test_an_out_of_memory_batch_is_answered_as_two_halves(server: ServerProcess) -> None:
    xs = [np.full((1, 4), float(i), np.float32) for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda x: _infer(server.grpc_address, "fragile", x), xs))
    for x, y in zip(xs, answers, strict=True):
        np.testing.assert_array_equal(y, x * 2)
    log = server.log()
    assert "a batch of 4 requests ran out of memory" in log and "two halves" in log, log[-2000:]
    with grpcclient.InferenceServerClient(server.grpc_address) as client:
        stats = client.get_inference_statistics("fragile").model_stats[0]
    assert stats.inference_stats.success.count == 4 and stats.inference_stats.fail.count == 0


def test_a_model_that_keeps_failing_is_unhealthy_until_a_batch_succeeds(server: ServerProcess) -> None:
    bad = np.full((1, 4), -1.0, np.float32)
    with grpcclient.InferenceServerClient(server.grpc_address) as client:
        for _ in range(UNHEALTHY_AFTER):
            with pytest.raises(InferenceServerException, match="negative input: boom"):
                _infer(server.grpc_address, "fragile", bad)
        assert not client.is_model_ready("fragile"), "reported unhealthy"
        assert _healthy_gauge(server).endswith(" 0.0")
        assert client.is_model_ready("add") and client.is_server_ready(), "other models untouched"
        np.testing.assert_array_equal(_infer(server.grpc_address, "add", np.ones((1, 4), np.float32)), 2.0)
        good = np.ones((1, 4), np.float32)
        np.testing.assert_array_equal(_infer(server.grpc_address, "fragile", good), good * 2)  # still routed
        assert client.is_model_ready("fragile"), "one good batch heals it"
        assert _healthy_gauge(server).endswith(" 1.0")
