"""Bad input gets a precise status and message, and changes nothing: the server keeps serving."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from serving.api.codec import build_infer_request
from serving.proto import inference_pb2 as pb
from serving.proto import inference_pb2_grpc
from tests.lifecycle_client import Admin, admin_address
from tests.model_factory import add_model_config, write_add_repository
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


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    write_add_repository(root, "add", versions=(1, 2))
    # A model whose lone request waits 3 s for a fuller batch: the queue (size 1) is full meanwhile.
    write_add_repository(root, "slow", config=add_model_config("slow", batching=SLOW_BATCHING))
    # A version whose model file is corrupt, and a model whose config is invalid.
    write_add_repository(root, "broken", versions=(1, 2))
    (root / "broken" / "2" / "model.onnx").write_bytes(b"not an onnx file")
    write_add_repository(
        root,
        "badconfig",
        config=add_model_config("badconfig", width=4).replace(
            "dims: [ 4 ] } ]\noutput", "dims: [ 0 ] } ]\noutput"
        ),
    )
    return root


@pytest.fixture(scope="module")
def server(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = start_server(
        repo, tmp_path_factory.mktemp("errors") / "server.log", "--max-message-bytes", "65536",
        "--torch-threads", "1", "--switch-interval-us", "300",
    )
    yield process
    assert process.stop() == 0, process.log()[-3000:]


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(server.grpc_address)


@pytest.fixture(scope="module")
def admin(server: ServerProcess) -> Iterator[Admin]:
    client = Admin(admin_address(server.log(), server.grpc_address), server.grpc_address)
    yield client
    client.close()


@pytest.fixture(scope="module")
def stub(server: ServerProcess) -> inference_pb2_grpc.GRPCInferenceServiceStub:
    return inference_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(server.grpc_address))


def add_input(x: np.ndarray, name: str = "x", datatype: str = "FP32") -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(x.shape), datatype)
    tensor.set_data_from_numpy(x)
    return tensor


def expect_error(call: object, code: str, *fragments: str) -> None:
    with pytest.raises(InferenceServerException) as info:
        call()  # type: ignore[operator]
    assert info.value.status() == f"StatusCode.{code}", info.value
    for fragment in fragments:
        assert fragment in info.value.message(), info.value.message()


def assert_still_serving(client: grpcclient.InferenceServerClient) -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    result = client.infer("add", [add_input(x)], model_version="1")
    np.testing.assert_array_equal(result.as_numpy("y"), x + 1)


def test_unknown_model_and_version(client: grpcclient.InferenceServerClient) -> None:
    x = np.zeros((1, 4), np.float32)
    expect_error(lambda: client.infer("nope", [add_input(x)]), "NOT_FOUND", "Request for unknown model: 'nope' is not found")
    expect_error(
        lambda: client.infer("add", [add_input(x)], model_version="9"), "NOT_FOUND", "Request for unknown model: 'add' version 9 is not found"
    )
    expect_error(lambda: client.get_model_metadata("nope"), "NOT_FOUND", "nope")
    assert_still_serving(client)


def test_wrong_shape_dtype_batch(client: grpcclient.InferenceServerClient) -> None:
    expect_error(
        lambda: client.infer("add", [add_input(np.zeros((1, 5), np.float32))]),
        "INVALID_ARGUMENT",
        "input 'x'",
        "shape [1, 5]",
        "[-1, 4]",
    )
    expect_error(
        lambda: client.infer("add", [add_input(np.zeros((1, 4), np.float64), datatype="FP64")]),
        "INVALID_ARGUMENT",
        "input 'x'",
        "FP64",
        "FP32",
    )
    expect_error(
        lambda: client.infer("add", [add_input(np.zeros((9, 4), np.float32))]),
        "INVALID_ARGUMENT",
        "input 'x'",
        "batch size 9 exceeds max_batch_size 8",
    )
    expect_error(
        lambda: client.infer("add", [add_input(np.zeros((1, 4), np.float32), name="z")]),
        "INVALID_ARGUMENT",
        "unexpected input 'z'",
    )
    expect_error(
        lambda: client.infer(
            "add", [add_input(np.zeros((1, 4), np.float32))], outputs=[grpcclient.InferRequestedOutput("w")]
        ),
        "INVALID_ARGUMENT",
        "unknown output 'w'",
    )
    assert_still_serving(client)


def test_wrong_byte_count(
    stub: inference_pb2_grpc.GRPCInferenceServiceStub, client: grpcclient.InferenceServerClient
) -> None:
    request = build_infer_request("add", {"x": np.zeros((2, 4), np.float32)})
    request.raw_input_contents[0] = request.raw_input_contents[0][:-4]
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input 'x': 28 bytes of raw content, expected 32" in info.value.details()
    assert_still_serving(client)


def test_typed_contents_are_accepted(stub: inference_pb2_grpc.GRPCInferenceServiceStub) -> None:
    request = pb.ModelInferRequest(model_name="add", model_version="2")
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[2, 4])
    tensor.contents.fp32_contents.extend(float(i) for i in range(8))
    reply = stub.ModelInfer(request)
    assert reply.model_version == "2"
    y = np.frombuffer(reply.raw_output_contents[0], np.float32).reshape(2, 4)
    np.testing.assert_array_equal(y, np.arange(8, dtype=np.float32).reshape(2, 4) + 2)


def test_unknown_request_parameters_are_ignored(stub: inference_pb2_grpc.GRPCInferenceServiceStub) -> None:
    request = build_infer_request(
        "add",
        {"x": np.ones((1, 4), np.float32)},
        parameters={"triton_enable_empty_final_response": False, "unload_dependents": True, "whatever": "x"},
    )
    reply = stub.ModelInfer(request)
    assert list(np.frombuffer(reply.raw_output_contents[0], np.float32)) == [3.0] * 4  # default = version 2


def test_oversized_message(
    stub: inference_pb2_grpc.GRPCInferenceServiceStub, client: grpcclient.InferenceServerClient
) -> None:
    request = build_infer_request("add", {"x": np.zeros((8, 4), np.float32)})
    request.id = "x" * 70000
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert_still_serving(client)


def test_full_queue_and_deadline(
    stub: inference_pb2_grpc.GRPCInferenceServiceStub, client: grpcclient.InferenceServerClient, admin: Admin
) -> None:
    request = build_infer_request("slow", {"x": np.ones((1, 4), np.float32)})
    # A request with a short deadline waits for the 3 s batching delay, passes its deadline and is
    # dropped before reaching the model.
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request, timeout=0.5)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    first = stub.ModelInfer.future(request, timeout=30)
    deadline = time.monotonic() + 10
    while admin.versions("slow")[1].queue_depth < 1:  # it waits in the queue for a fuller batch
        assert time.monotonic() < deadline, "the request never reached the queue"
        time.sleep(0.01)
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request, timeout=30)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "queue" in info.value.details()
    reply = first.result()  # the queued request still completes
    assert list(np.frombuffer(reply.raw_output_contents[0], np.float32)) == [2.0] * 4
    stats = client.get_inference_statistics("slow", "1", as_json=True)["model_stats"][0]
    assert int(stats["inference_count"]) == 1  # the expired and the rejected requests never ran
    assert int(stats["inference_stats"]["fail"]["count"]) >= 1
    assert_still_serving(client)


def test_broken_version_and_bad_config_fail_alone(client: grpcclient.InferenceServerClient) -> None:
    index = {
        (m["name"], m.get("version", "")): m
        for m in client.get_model_repository_index(as_json=True)["models"]
    }
    assert index[("broken", "1")]["state"] == "READY"
    assert index[("broken", "2")]["state"] == "FAILED"
    assert "model.onnx" in index[("broken", "2")]["reason"]
    assert index[("badconfig", "")]["state"] == "FAILED"
    assert "badconfig/config.pbtxt" in index[("badconfig", "")]["reason"]
    assert "dims" in index[("badconfig", "")]["reason"]
    x = np.zeros((1, 4), np.float32)
    result = client.infer("broken", [add_input(x)])
    assert result.get_response().model_version == "1"  # the failed version never takes traffic
    expect_error(
        lambda: client.infer("broken", [add_input(x)], model_version="2"),
        "UNAVAILABLE",
        "version 2",
        "FAILED",
    )
    expect_error(lambda: client.infer("badconfig", [add_input(x)]), "UNAVAILABLE", "config.pbtxt")
    assert_still_serving(client)


def test_unload_and_load(client: grpcclient.InferenceServerClient, repo: Path) -> None:
    x = np.ones((1, 4), np.float32)
    client.unload_model("broken")
    expect_error(lambda: client.infer("broken", [add_input(x)]), "UNAVAILABLE", "not loaded")
    assert not client.is_model_ready("broken")
    expect_error(lambda: client.load_model("broken"), "FAILED_PRECONDITION", "version 2")
    assert client.is_model_ready("broken", "1")
    expect_error(lambda: client.load_model("nope"), "NOT_FOUND", "nope")
    assert_still_serving(client)


def test_torch_threads_flag_is_applied(server: ServerProcess) -> None:
    assert "torch intra-op CPU threads: 1" in server.log()


def test_switch_interval_flag_is_applied(server: ServerProcess) -> None:
    assert "Python thread switch interval: 300 us" in server.log()
