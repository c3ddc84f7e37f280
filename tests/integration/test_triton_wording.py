"""Error texts that Triton's clients and examples match on, through the real server: an unknown model,
a load that fails, a bad version string, raw and typed contents mixed, and a deadline that passes while
the request waits in the queue (the same text whichever timer, the client's or the server's, fires)."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from serving.api.codec import build_infer_request
from serving.proto import inference_pb2 as pb
from serving.proto import inference_pb2_grpc
from tests.model_factory import add_model_config, write_add_repository
from tests.servers import ServerProcess, serving

pytestmark = pytest.mark.integration

SLOW = (  # Triton's fixed delay: a lone request waits 5 s
    "dynamic_batching { preferred_batch_size: [ 8 ] max_queue_delay_microseconds: 5000000 }\n"
    'parameters { key: "batching.strict_delay" value: { string_value: "true" } }'
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("repo")
    write_add_repository(root, "add")
    write_add_repository(root, "slow", config=add_model_config("slow", batching=SLOW))
    write_add_repository(root, "broken")
    (root / "broken" / "1" / "model.onnx").write_bytes(b"not an onnx file")
    yield from serving(root, tmp_path_factory.mktemp("wording") / "server.log")


def error_of(call: object) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as info:
        call()  # type: ignore[operator]
    return info.value


def x_input() -> grpcclient.InferInput:
    tensor = grpcclient.InferInput("x", [1, 4], "FP32")
    tensor.set_data_from_numpy(np.ones((1, 4), np.float32))
    return tensor


def test_unknown_model_in_tritons_words(
    server: ServerProcess, client: grpcclient.InferenceServerClient
) -> None:
    for call in (
        lambda: client.get_model_metadata("wrong_model_name"),
        lambda: client.infer("wrong_model_name", [x_input()]),
    ):
        error = error_of(call)
        assert error.status() == "StatusCode.NOT_FOUND"
        assert error.message() == "Request for unknown model: 'wrong_model_name' is not found"
    assert server.http_address is not None
    with httpclient.InferenceServerClient(server.http_address) as web:
        error = error_of(lambda: web.get_model_metadata("wrong_model_name"))
        assert error.status() == "404"
        assert error.message().startswith("Request for unknown model: 'wrong_model_name' is not found")


def test_a_client_supplied_name_is_cut_to_200_characters(client: grpcclient.InferenceServerClient) -> None:
    name = "m" * 5000
    message = error_of(lambda: client.get_model_metadata(name)).message()
    assert message.startswith("Request for unknown model: '" + "m" * 200 + "…'")
    assert "m" * 201 not in message


def test_a_failed_load_says_failed_to_load_with_the_reason(client: grpcclient.InferenceServerClient) -> None:
    error = error_of(lambda: client.load_model("broken"))
    assert error.status() == "StatusCode.FAILED_PRECONDITION"
    assert error.message().startswith("failed to load 'broken': version 1: ")
    assert "model.onnx" in error.message()


def test_a_bad_version_string_in_tritons_words(
    server: ServerProcess, client: grpcclient.InferenceServerClient
) -> None:
    error = error_of(lambda: client.infer("add", [x_input()], model_version="one"))
    assert error.status() == "StatusCode.INVALID_ARGUMENT"
    assert error.message().startswith("failed to get model version from specified version string 'one'")
    assert server.http_address is not None
    connection = http.client.HTTPConnection(server.http_address, timeout=30)
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1.0] * 4}]}
    connection.request("POST", "/v2/models/add/versions/one/infer", json.dumps(body))
    reply = connection.getresponse()
    assert reply.status == 400
    assert "failed to get model version from specified version string 'one'" in reply.read().decode()
    connection.close()


def test_raw_and_typed_contents_mixed_are_refused(server: ServerProcess) -> None:
    """Triton's grpc_explicit_int_content_client.py check, word for word."""
    request = build_infer_request("add", {"x": np.ones((1, 4), np.float32)})
    request.inputs[0].contents.fp32_contents.extend([1.0] * 4)
    with grpc.insecure_channel(server.grpc_address) as channel:
        stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(request, timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == (
        "contents field must not be specified when using raw_input_contents for 'x' for model 'add'"
    )


def test_a_deadline_passed_in_the_queue_reads_the_same_whichever_timer_fires(
    server: ServerProcess, client: grpcclient.InferenceServerClient
) -> None:
    request: pb.ModelInferRequest = build_infer_request("slow", {"x": np.ones((1, 4), np.float32)})
    details = set()
    with grpc.insecure_channel(server.grpc_address) as channel:
        stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
        for timeout in (0.2, 0.3, 0.5, 0.8):  # the 5 s batching delay outlasts each: the deadline passes
            with pytest.raises(grpc.RpcError) as info:
                stub.ModelInfer(request, timeout=timeout)
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            details.add(info.value.details())
    assert details == {"Deadline Exceeded"}
    error = error_of(lambda: client.infer("slow", [x_input()], client_timeout=0.3))
    assert error.status() == "StatusCode.DEADLINE_EXCEEDED" and error.message() == "Deadline Exceeded"
    stats = client.get_inference_statistics("slow", as_json=True)["model_stats"][0]
    assert int(stats["inference_stats"]["fail"]["count"]) >= 1  # the server dropped them itself, too
    assert int(stats.get("inference_count", 0)) == 0  # none reached the model
