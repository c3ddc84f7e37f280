"""Register before load, through the real server: while a version loads, RepositoryIndex, ModelReady,
the admin API's Versions and /metrics all say it is LOADING (or WARMING), and READY once it is.

The model is deliberately slow to load (a 200 MB initializer that onnxruntime reads and folds), so the
load spans many polls; the test only polls for conditions and never sleeps as an assertion. Each view is
read between two RepositoryIndex reads that both say "not ready": states only move forward, so what the
view said in between must be a loading state too.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from prometheus_client.parser import text_string_to_metric_families

from serving.proto import inference_pb2 as ipb
from serving.proto import inference_pb2_grpc
from tests.lifecycle_client import Admin, admin_address, infer
from tests.model_factory import add_model_config, write_add_repository
from tests.servers import ServerProcess, start_server

pytestmark = pytest.mark.integration

LOADING_STATES = {"LOADING", "WARMING"}
BULK_FLOATS = 50_000_000  # 200 MB: onnxruntime takes most of a second to load it


def write_bulky_add_model(path: Path) -> None:
    """ONNX: y = x + sum(w) + 1 with w a large all-zero initializer, so y = x + 1, slowly loaded."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])
    weights = numpy_helper.from_array(np.zeros(BULK_FLOATS, np.float32), "weights")
    one = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
    nodes = [
        helper.make_node("ReduceSum", ["weights"], ["total"], keepdims=1),
        helper.make_node("Add", ["total", "one"], ["addend"]),
        helper.make_node("Add", ["x", "addend"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "bulky", [x], [y], initializer=[weights, one])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_add_repository(tmp_path_factory.mktemp("register"), "add")


@pytest.fixture(scope="module")
def server(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = start_server(repo, tmp_path_factory.mktemp("register-log") / "server.log")
    yield process
    assert process.stop() == 0, process.log()[-3000:]


def index_state(stub: inference_pb2_grpc.GRPCInferenceServiceStub, model: str) -> str:
    """The model's version 1 state in RepositoryIndex; "" while it lists no version 1."""
    models = stub.RepositoryIndex(ipb.RepositoryIndexRequest(), timeout=10).models
    return next((m.state for m in models if m.name == model and m.version == "1"), "")


def metrics_state(server: ServerProcess, model: str) -> str:
    """The state whose serving_model_version_state series is 1 for the model's version 1."""
    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "serving_model_version_state" and sample.value == 1.0:
                if sample.labels["model"] == model and sample.labels["version"] == "1":
                    return sample.labels["state"]
    return ""


def test_a_loading_version_is_listed_loading_by_every_view_then_ready(
    server: ServerProcess, repo: Path
) -> None:
    write_bulky_add_model(repo / "bulky" / "1" / "model.onnx")
    (repo / "bulky" / "config.pbtxt").write_text(add_model_config("bulky"))
    admin = Admin(admin_address(server.log(), server.grpc_address), server.grpc_address)
    with grpc.insecure_channel(server.grpc_address) as channel:
        stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
        loading = stub.RepositoryModelLoad.future(
            ipb.RepositoryModelLoadRequest(model_name="bulky"), timeout=120
        )
        seen: dict[str, str] = {}
        listed: set[str] = set()  # every state RepositoryIndex gave version 1 while the load ran
        deadline = time.monotonic() + 120
        while not loading.done() and len(seen) < 4:
            assert time.monotonic() < deadline, "the load never finished"
            before = index_state(stub, "bulky")
            listed.add(before)
            if before not in LOADING_STATES:
                continue
            views = {
                "ready": str(stub.ModelReady(ipb.ModelReadyRequest(name="bulky", version="1")).ready),
                "admin": admin.versions("bulky")[1].state,
                "metrics": metrics_state(server, "bulky"),
            }
            if index_state(stub, "bulky") in LOADING_STATES:  # still loading after the views answered
                seen = {"index": before, **views}
        loading.result()
        assert listed & LOADING_STATES, f"RepositoryIndex never listed the loading version: {listed}"
        assert seen, "the load ended before every view could be read while it was loading"
        assert seen["index"] in LOADING_STATES and seen["ready"] == "False", seen
        assert seen["admin"] in LOADING_STATES and seen["metrics"] in LOADING_STATES, seen

        assert index_state(stub, "bulky") == "READY"
        assert stub.ModelReady(ipb.ModelReadyRequest(name="bulky", version="1")).ready
        assert admin.versions("bulky")[1].state == "READY"
        assert metrics_state(server, "bulky") == "READY"
        assert infer(stub, "bulky", 2.0) == 1  # y = x + 1: version 1 answers
    admin.close()
