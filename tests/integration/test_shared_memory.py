"""Triton's system shared-memory extension and classification extension, through the real server with
tritonclient's own helpers (as Triton's simple_grpc_shm_client.py does) and perf_analyzer."""

from __future__ import annotations

import re
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.integration.test_perf_analyzer import run_perf_analyzer, run_perf_analyzer_http
from tests.model_factory import add_model_config, write_add_repository
from tests.servers import ServerProcess, start_server

with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)  # pkg_resources deprecation, inside tritonclient
    import tritonclient.utils.shared_memory as shm

pytestmark = pytest.mark.integration

BYTES_4 = 4 * 4  # one row of the add model: FP32 [1, 4]
LABELS = ["zero", "one", "two", "three"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("repo")
    write_add_repository(root, "add", versions=(1,))
    labelled = add_model_config("labelled").replace(
        'output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } ]',
        'output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] label_filename: "labels.txt" } ]',
    )
    write_add_repository(root, "labelled", versions=(1,), config=labelled)
    (root / "labelled" / "labels.txt").write_text("\n".join(LABELS) + "\n")
    process = start_server(root, tmp_path_factory.mktemp("shm") / "server.log")
    yield process
    assert process.stop() == 0, process.log()[-3000:]


@pytest.fixture()
def client(server: ServerProcess) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(server.grpc_address) as c:
        c.unregister_system_shared_memory()
        yield c
        c.unregister_system_shared_memory()


@pytest.fixture()
def regions() -> Iterator[tuple[str, Any, str, Any]]:
    tag = uuid.uuid4().hex
    input_key, output_key = f"/serving_in_{tag}", f"/serving_out_{tag}"
    inputs = shm.create_shared_memory_region("input", input_key, 2 * BYTES_4)
    outputs = shm.create_shared_memory_region("output", output_key, 2 * BYTES_4)
    yield input_key, inputs, output_key, outputs
    shm.destroy_shared_memory_region(inputs)
    shm.destroy_shared_memory_region(outputs)


def _shm_infer(
    client: grpcclient.InferenceServerClient, in_offset: int = 0, out_size: int = BYTES_4
) -> grpcclient.InferResult:
    tensor = grpcclient.InferInput("x", [1, 4], "FP32")
    tensor.set_shared_memory("input", BYTES_4, offset=in_offset)
    output = grpcclient.InferRequestedOutput("y")
    output.set_shared_memory("output", out_size)
    return client.infer("add", [tensor], outputs=[output])


def test_inputs_and_outputs_travel_through_shared_memory(
    client: grpcclient.InferenceServerClient, regions: tuple[str, Any, str, Any]
) -> None:
    input_key, inputs, output_key, outputs = regions
    values = np.array([[1.5, -2.0, 0.0, 7.25]], dtype=np.float32)
    shm.set_shared_memory_region(inputs, [values], offset=BYTES_4)
    client.register_system_shared_memory("input", input_key, 2 * BYTES_4)
    client.register_system_shared_memory("output", output_key, 2 * BYTES_4)
    status = client.get_system_shared_memory_status(as_json=True)["regions"]
    assert {name: (r["key"], int(r["byte_size"])) for name, r in status.items()} == {
        "input": (input_key, 2 * BYTES_4),
        "output": (output_key, 2 * BYTES_4),
    }
    result = _shm_infer(client, in_offset=BYTES_4)
    response = result.get_response()
    assert list(response.raw_output_contents) == [b""]  # the bytes went to shared memory, not the reply
    (output,) = response.outputs
    assert (output.name, output.datatype, list(output.shape)) == ("y", "FP32", [1, 4])
    written = shm.get_contents_as_numpy(outputs, np.float32, [1, 4])
    assert np.array_equal(written, values + 1.0)
    client.unregister_system_shared_memory("input")
    assert list(client.get_system_shared_memory_status(as_json=True)["regions"]) == ["output"]


def test_bad_regions_are_invalid_argument_and_change_nothing(
    client: grpcclient.InferenceServerClient, regions: tuple[str, Any, str, Any]
) -> None:
    input_key, inputs, output_key, _ = regions
    shm.set_shared_memory_region(inputs, [np.zeros((1, 4), np.float32)])
    cases = {
        "unregistered": lambda: _shm_infer(client),
        "too small": lambda: client.register_system_shared_memory("big", input_key, 4 * BYTES_4),
        "outside the window": lambda: _shm_infer(client, in_offset=BYTES_4 + 4),
        "output too small": lambda: _shm_infer(client, out_size=8),
        "bad key": lambda: client.register_system_shared_memory("evil", "/../../etc/passwd", 8),
    }
    for label, call in cases.items():
        if label == "outside the window":
            client.register_system_shared_memory("input", input_key, 2 * BYTES_4)
            client.register_system_shared_memory("output", output_key, 2 * BYTES_4)
        with pytest.raises(InferenceServerException) as caught:
            call()
        assert caught.value.status() == "StatusCode.INVALID_ARGUMENT", (label, caught.value)
    with pytest.raises(InferenceServerException) as caught:
        client.register_system_shared_memory("input", input_key, 2 * BYTES_4)
    assert caught.value.status() == "StatusCode.ALREADY_EXISTS"
    assert "already in manager" in caught.value.message()
    # Still serving, and the regions that exist still work.
    assert _shm_infer(client).get_response().outputs[0].name == "y"


def test_cuda_shared_memory_says_it_needs_a_gpu(client: grpcclient.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as caught:
        client.register_cuda_shared_memory("gpu", b"\x00" * 64, 0, 64)
    assert caught.value.status() == "StatusCode.FAILED_PRECONDITION"
    assert "needs a GPU" in caught.value.message()


def test_classification_returns_top_classes_with_labels(client: grpcclient.InferenceServerClient) -> None:
    values = np.array([[0.1, 3.0, -1.0, 2.0], [5.0, 4.0, 3.0, 2.0]], dtype=np.float32)
    tensor = grpcclient.InferInput("x", list(values.shape), "FP32")
    tensor.set_data_from_numpy(values)
    for model, labels in (("add", False), ("labelled", True)):
        output = grpcclient.InferRequestedOutput("y", class_count=2)
        result = client.infer(model, [tensor], outputs=[output])
        got = result.as_numpy("y")
        assert got.shape == (2, 2) and got.dtype == object
        expected = [["4.000000:1", "3.000000:3"], ["6.000000:0", "5.000000:1"]]
        if labels:
            expected = [[f"{e}:{LABELS[int(e.split(':')[1])]}" for e in row] for row in expected]
        assert [[b.decode() for b in row] for row in got] == expected


def test_classification_over_http(server: ServerProcess) -> None:
    assert server.http_address is not None
    with httpclient.InferenceServerClient(server.http_address) as client:
        values = np.array([[0.0, 9.0, 1.0, 2.0]], dtype=np.float32)
        tensor = httpclient.InferInput("x", [1, 4], "FP32")
        tensor.set_data_from_numpy(values)
        output = httpclient.InferRequestedOutput("y", class_count=1, binary_data=False)
        result = client.infer("labelled", [tensor], outputs=[output])
        assert result.as_numpy("y").tolist() == [["10.000000:1:one"]]


def test_shared_memory_over_http(server: ServerProcess, regions: tuple[str, Any, str, Any]) -> None:
    assert server.http_address is not None
    input_key, inputs, output_key, outputs = regions
    values = np.array([[4.0, 3.0, 2.0, 1.0]], dtype=np.float32)
    shm.set_shared_memory_region(inputs, [values])
    with httpclient.InferenceServerClient(server.http_address) as client:
        client.unregister_system_shared_memory()
        client.register_system_shared_memory("input", input_key, 2 * BYTES_4)
        client.register_system_shared_memory("output", output_key, 2 * BYTES_4)
        status = client.get_system_shared_memory_status()
        assert sorted(r["name"] for r in status) == ["input", "output"]
        tensor = httpclient.InferInput("x", [1, 4], "FP32")
        tensor.set_shared_memory("input", BYTES_4)
        output = httpclient.InferRequestedOutput("y", binary_data=True)
        output.set_shared_memory("output", BYTES_4)
        result = client.infer("add", [tensor], outputs=[output])
        assert "data" not in result.get_output("y")  # the bytes went to shared memory
        assert np.array_equal(shm.get_contents_as_numpy(outputs, np.float32, [1, 4]), values + 1.0)
        client.unregister_system_shared_memory()
        assert client.get_system_shared_memory_status() == []


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_perf_analyzer_with_system_shared_memory(
    server: ServerProcess, perf_analyzer_env: dict[str, str], protocol: str
) -> None:
    run, address = (run_perf_analyzer, server.grpc_address), (run_perf_analyzer_http, server.http_address)
    runner, url = run if protocol == "grpc" else address
    assert url is not None
    with grpcclient.InferenceServerClient(server.grpc_address) as client:
        (before,) = client.get_inference_statistics("add", "1", as_json=True)["model_stats"]
        output = runner(
            url,
            "add",
            perf_analyzer_env,
            "--shared-memory",
            "system",
            "--output-shared-memory-size",
            "64",
            "--concurrency-range",
            "2",
        )
        (throughput,) = re.findall(r"^Concurrency: 2, throughput: ([\d.]+) infer/sec", output, re.M)
        assert float(throughput) > 0, output
        (after,) = client.get_inference_statistics("add", "1", as_json=True)["model_stats"]
        assert int(after["inference_count"]) > int(before.get("inference_count", 0))
        # perf_analyzer unregisters what it registered when it is done.
        assert client.get_system_shared_memory_status(as_json=True).get("regions", {}) == {}


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="CUDA shared memory needs a GPU")
def test_cuda_shared_memory_inputs_and_outputs(server: ServerProcess) -> None:
    """GPU only (runs where a device is lent): device buffers exported with CUDA IPC by this process
    (torch's storage sharing gives the cudaIpcMemHandle), registered, used for an input and an output."""
    import torch

    values = torch.tensor([[1.0, 2.0, 3.0, 4.0]], device="cuda:0")
    result = torch.zeros((1, 4), device="cuda:0")
    torch.cuda.synchronize()
    with grpcclient.InferenceServerClient(server.grpc_address) as client:
        for name, tensor in (("gpu_in", values), ("gpu_out", result)):
            handle = tensor.untyped_storage()._share_cuda_()[1]  # (device, handle, size, ...)
            client.register_cuda_shared_memory(name, __import__("base64").b64encode(handle), 0, BYTES_4)
        status = client.get_cuda_shared_memory_status(as_json=True)["regions"]
        assert sorted(status) == ["gpu_in", "gpu_out"]
        tensor = grpcclient.InferInput("x", [1, 4], "FP32")
        tensor.set_shared_memory("gpu_in", BYTES_4)
        output = grpcclient.InferRequestedOutput("y")
        output.set_shared_memory("gpu_out", BYTES_4)
        client.infer("add", [tensor], outputs=[output])
        torch.cuda.synchronize()
        assert torch.equal(result, values + 1.0)
        client.unregister_cuda_shared_memory()
        assert client.get_cuda_shared_memory_status(as_json=True).get("regions", {}) == {}
