"""Every RPC through unmodified tritonclient (sync and asyncio) against the real server on loopback."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient

from tests.servers import ServerProcess

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client(live_server: ServerProcess) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(live_server.grpc_address)


@pytest.fixture(scope="module")
def test_set(example_models: Path) -> tuple[np.ndarray, np.ndarray]:
    data = np.load(example_models / "digits" / "test_set.npz")
    return data["X_test"].astype(np.float32), data["y_test"]


def digits_input(x: np.ndarray) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return tensor


def test_server_live_ready_and_metadata(client: grpcclient.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    meta = client.get_server_metadata(as_json=True)
    assert meta["name"] == "serving"
    assert meta["version"]
    assert "statistics" in meta["extensions"]
    assert "model_repository" in meta["extensions"]


def test_model_ready_per_version(client: grpcclient.InferenceServerClient) -> None:
    assert client.is_model_ready("digits")
    assert client.is_model_ready("digits", "1")
    assert client.is_model_ready("digits", "2")
    assert not client.is_model_ready("digits", "7")
    assert not client.is_model_ready("no_such_model")


def test_model_metadata_includes_batch_dim(client: grpcclient.InferenceServerClient) -> None:
    meta = client.get_model_metadata("digits", as_json=True)
    assert meta["name"] == "digits"
    assert sorted(meta["versions"]) == ["1", "2"]
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": ["-1", "64"]}]
    assert meta["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": ["-1", "10"]}]
    assert client.get_model_metadata("digits", "1", as_json=True)["platform"] == "onnxruntime_onnx"
    assert client.get_model_metadata("digits", "2", as_json=True)["platform"] == "pytorch_libtorch"


def test_model_config_decodes_in_tritonclient(client: grpcclient.InferenceServerClient) -> None:
    config = client.get_model_config("digits", as_json=True)["config"]
    assert config["name"] == "digits"
    assert config["max_batch_size"] == 64
    assert config["input"][0]["dims"] == ["64"]  # config dims exclude the batch dimension
    assert config["dynamic_batching"]["preferred_batch_size"] == [16, 32]
    # KIND_AUTO is resolved to where the instance really runs (CPU on a machine without a GPU).
    assert config["instance_group"][0]["kind"] in ("KIND_CPU", "KIND_GPU")


def test_both_versions_answer_and_say_which(
    client: grpcclient.InferenceServerClient, test_set: tuple[np.ndarray, np.ndarray]
) -> None:
    x = test_set[0][:5]
    for version in ("1", "2"):
        result = client.infer("digits", [digits_input(x)], model_version=version)
        assert result.get_response().model_version == version
        probabilities = result.as_numpy("probabilities")
        assert probabilities.shape == (5, 10)
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-4)
    default = client.infer("digits", [digits_input(x)])
    assert default.get_response().model_version == "2"  # no traffic policy: the highest version


def test_requested_output_only(
    client: grpcclient.InferenceServerClient, test_set: tuple[np.ndarray, np.ndarray]
) -> None:
    result = client.infer(
        "digits", [digits_input(test_set[0][:2])], outputs=[grpcclient.InferRequestedOutput("probabilities")]
    )
    assert result.as_numpy("probabilities").shape == (2, 10)


def test_accuracy_through_server_equals_in_process(
    client: grpcclient.InferenceServerClient, example_models: Path, test_set: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = test_set
    for version in ("1", "2"):
        predictions = []
        for start in range(0, len(x), 64):
            result = client.infer("digits", [digits_input(x[start : start + 64])], model_version=version)
            predictions.append(result.as_numpy("probabilities").argmax(axis=1))
        served = float((np.concatenate(predictions) == y).mean())
        recorded = json.loads((example_models / "digits" / version / "accuracy.json").read_text())["accuracy"]
        assert served == pytest.approx(recorded, abs=1e-12)
        assert served >= 0.95


def test_resnet50_versions_agree_on_cpu(client: grpcclient.InferenceServerClient) -> None:
    images = np.random.default_rng(0).integers(0, 256, size=(2, 3, 224, 224), dtype=np.uint8)
    tensor = grpcclient.InferInput("images", list(images.shape), "UINT8")
    tensor.set_data_from_numpy(images)
    logits = {}
    for version in ("1", "2"):
        result = client.infer("resnet50", [tensor], model_version=version)
        logits[version] = result.as_numpy("logits")
        assert logits[version].shape == (2, 1000)
        assert logits[version].dtype == np.float32
    np.testing.assert_allclose(logits["1"], logits["2"], rtol=1e-2, atol=1e-2)


def test_statistics_count_requests(
    client: grpcclient.InferenceServerClient, test_set: tuple[np.ndarray, np.ndarray]
) -> None:
    def stats() -> dict[str, object]:
        reply = client.get_inference_statistics("digits", "1", as_json=True)
        assert len(reply["model_stats"]) == 1
        entry: dict[str, object] = reply["model_stats"][0]
        return entry

    before = stats()
    for _ in range(3):
        client.infer("digits", [digits_input(test_set[0][:4])], model_version="1")
    after = stats()
    assert after["version"] == "1"
    assert int(after["inference_count"]) - int(before.get("inference_count", 0)) == 12
    queue_before = int(before["inference_stats"].get("queue", {}).get("count", 0))  # type: ignore[union-attr]
    assert int(after["inference_stats"]["queue"]["count"]) - queue_before == 3  # type: ignore[index]
    assert int(after["execution_count"]) >= 1
    everything = client.get_inference_statistics(as_json=True)["model_stats"]
    assert {(s["name"], s["version"]) for s in everything} >= {
        ("digits", "1"),
        ("digits", "2"),
        ("resnet50", "1"),
    }


def test_repository_index(client: grpcclient.InferenceServerClient) -> None:
    index = client.get_model_repository_index(as_json=True)["models"]
    states = {(m["name"], m.get("version")): m.get("state") for m in index}
    assert states[("digits", "1")] == "READY"
    assert states[("digits", "2")] == "READY"
    assert states[("resnet50", "1")] == "READY"


def test_stream_infer(live_server: ServerProcess, test_set: tuple[np.ndarray, np.ndarray]) -> None:
    results: list[object] = []
    client = grpcclient.InferenceServerClient(live_server.grpc_address)
    client.start_stream(callback=lambda result, error: results.append(error or result))
    for i in range(4):
        client.async_stream_infer(
            "digits", [digits_input(test_set[0][i : i + 1])], request_id=str(i), model_version="1"
        )
    client.stop_stream()
    assert len(results) == 4
    assert all(isinstance(r, grpcclient.InferResult) for r in results), results
    ids = sorted(r.get_response().id for r in results)  # type: ignore[attr-defined]
    assert ids == ["0", "1", "2", "3"]


async def test_asyncio_client_concurrent_requests_split_exactly(
    live_server: ServerProcess, test_set: tuple[np.ndarray, np.ndarray]
) -> None:
    """Many concurrent requests of different sizes: each gets exactly its own rows back."""
    x = test_set[0]
    sync = grpcclient.InferenceServerClient(live_server.grpc_address)
    expected = sync.infer("digits", [digits_input(x[:60])], model_version="1").as_numpy("probabilities")
    client = aioclient.InferenceServerClient(live_server.grpc_address)
    sizes = [1, 3, 2, 5, 1, 4, 7, 1, 9, 2, 6, 3, 1, 8, 2, 5]
    offsets = np.cumsum([0] + sizes[:-1])

    async def one(offset: int, size: int) -> np.ndarray:
        tensor = aioclient.InferInput("input", [size, 64], "FP32")
        tensor.set_data_from_numpy(x[offset : offset + size])
        result = await client.infer("digits", [tensor], model_version="1")
        return result.as_numpy("probabilities")

    try:
        results = await asyncio.gather(*(one(int(o), s) for o, s in zip(offsets, sizes, strict=True)))
        assert await client.is_server_ready()
    finally:
        await client.close()
    for offset, size, result in zip(offsets, sizes, results, strict=True):
        np.testing.assert_allclose(result, expected[offset : offset + size], rtol=1e-5, atol=1e-6)
