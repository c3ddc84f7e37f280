"""RepositoryModelLoad's `config` override and `file:<path>` contents, through the real server with
Triton's own clients (tritonclient.grpc and .http `load_model(..., config=..., files=...)`).

A refused override (bad JSON, an unknown field, a path that leaves the model folder, an absolute path)
is INVALID_ARGUMENT and changes nothing: the version loaded before keeps serving with its config.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.model_factory import write_add_model, write_add_repository
from tests.servers import ServerProcess, start_server

pytestmark = pytest.mark.integration


def config_json(name: str, width: int = 4, max_batch_size: int = 8, **extra: Any) -> str:
    return json.dumps(
        {
            "name": name,
            "platform": "onnxruntime_onnx",
            "max_batch_size": max_batch_size,
            "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [width]}],
            "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [width]}],
            **extra,
        }
    )


def onnx_bytes(tmp: Path, width: int, addend: float) -> bytes:
    path = tmp / f"add_{width}_{addend}.onnx"
    write_add_model(path, width, addend)
    return path.read_bytes()


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("scratch")


def start_with_temp(root: Path, log: Path, temp: Path, *flags: str) -> ServerProcess:
    """The server with TMPDIR=`temp`: where its temporary model folders go."""
    temp.mkdir(exist_ok=True)
    saved = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(temp)
    try:
        return start_server(root, log, *flags)
    finally:
        if saved is None:
            del os.environ["TMPDIR"]
        else:
            os.environ["TMPDIR"] = saved


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, scratch: Path) -> Iterator[ServerProcess]:
    root = write_add_repository(tmp_path_factory.mktemp("repo"), "add")
    process = start_with_temp(root, scratch / "server.log", scratch / "server-tmp")
    yield process
    assert process.stop() == 0, process.log()[-3000:]


def infer(client: grpcclient.InferenceServerClient, name: str, width: int = 4) -> np.ndarray:
    data = np.zeros((1, width), dtype=np.float32)
    tensor = grpcclient.InferInput("x", [1, width], "FP32")
    tensor.set_data_from_numpy(data)
    return client.infer(name, [tensor]).as_numpy("y")  # type: ignore[no-any-return]


def override_folders(scratch: Path, temp: str = "server-tmp") -> list[Path]:
    return sorted((scratch / temp).glob("serving-override-*"))


def test_config_override_replaces_config_pbtxt_for_the_load(client: grpcclient.InferenceServerClient) -> None:
    client.load_model("add", config=config_json("add", max_batch_size=2))
    assert client.get_model_config("add").config.max_batch_size == 2
    np.testing.assert_array_equal(infer(client, "add"), np.ones((1, 4)))
    client.load_model("add")  # no override: config.pbtxt again
    assert client.get_model_config("add").config.max_batch_size == 8


def test_files_override_a_repository_model_until_a_plain_load(
    client: grpcclient.InferenceServerClient, scratch: Path
) -> None:
    files = {"file:1/model.onnx": onnx_bytes(scratch, 4, 6.0)}
    client.load_model("add", config=config_json("add"), files=files)  # the repository folder is ignored
    np.testing.assert_array_equal(infer(client, "add"), np.full((1, 4), 6.0))
    assert len(override_folders(scratch)) == 1
    client.load_model("add")  # the repository's model again; the temporary folder goes
    np.testing.assert_array_equal(infer(client, "add"), np.ones((1, 4)))
    assert override_folders(scratch) == []


def test_files_only_model_loads_from_a_private_folder(
    client: grpcclient.InferenceServerClient, scratch: Path
) -> None:
    files = {"file:1/model.onnx": onnx_bytes(scratch, 6, 5.0)}
    client.load_model("fresh", config=config_json("fresh", width=6, max_batch_size=3), files=files)
    config = client.get_model_config("fresh").config
    assert (config.max_batch_size, list(config.input[0].dims)) == (3, [6])
    np.testing.assert_array_equal(infer(client, "fresh", 6), np.full((1, 6), 5.0))
    assert len(override_folders(scratch)) == 1
    client.unload_model("fresh")
    assert override_folders(scratch) == []
    assert not client.is_model_ready("fresh")


def test_new_files_replace_the_served_ones(client: grpcclient.InferenceServerClient, scratch: Path) -> None:
    for addend in (2.0, 3.0):  # same config, new model file: the new file serves
        files = {"file:1/model.onnx": onnx_bytes(scratch, 4, addend)}
        client.load_model("swap", config=config_json("swap"), files=files)
        np.testing.assert_array_equal(infer(client, "swap"), np.full((1, 4), addend))
        assert len(override_folders(scratch)) == 1  # the replaced folder is removed
    client.unload_model("swap")


REFUSED = [
    ("{not json", {}, "invalid config override"),
    (config_json("add", max_batch_size=2, bogus_field=1), {}, "bogus_field"),
    (config_json("add", max_batch_size=2), {"file:../x": b"1"}, "file:../x"),
    (config_json("add", max_batch_size=2), {"file:1/../../x": b"1"}, "file:1/../../x"),
    (config_json("add", max_batch_size=2), {"file:/tmp/x": b"1"}, "must be a relative path"),
    (None, {"file:1/model.onnx": b"1"}, "'config' parameter must be given"),
    (config_json("add", max_batch_size=-1), {}, "max_batch_size"),
]


@pytest.mark.parametrize(("config", "files", "needle"), REFUSED)
def test_a_refused_override_is_invalid_argument_and_changes_nothing(
    client: grpcclient.InferenceServerClient,
    scratch: Path,
    config: str | None,
    files: dict[str, bytes],
    needle: str,
) -> None:
    with pytest.raises(InferenceServerException) as info:
        client.load_model("add", config=config, files=files or None)
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT", info.value.message()
    assert needle in info.value.message() and "failed to load 'add'" in info.value.message()
    assert client.get_model_config("add").config.max_batch_size == 8  # the old version serves on
    np.testing.assert_array_equal(infer(client, "add"), np.ones((1, 4)))
    assert override_folders(scratch) == []
    assert not (scratch / "x").exists() and not Path("/tmp/x").exists()


def _post(
    server: ServerProcess, path: str, body: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[int, str]:
    assert server.http_address is not None
    connection = http.client.HTTPConnection(server.http_address, timeout=30)
    try:
        connection.request("POST", path, json.dumps(body), headers or {})
        reply = connection.getresponse()
        return reply.status, reply.read().decode()
    finally:
        connection.close()


def test_http_config_override_with_tritonclient_http(server: ServerProcess) -> None:
    assert server.http_address is not None
    with httpclient.InferenceServerClient(server.http_address) as client:
        client.load_model("add", config=config_json("add", max_batch_size=5))
        assert client.get_model_config("add")["max_batch_size"] == 5
        with pytest.raises(InferenceServerException) as info:
            client.load_model("add", config=config_json("add", bogus_field=1))
        assert info.value.status() == "400" and "bogus_field" in info.value.message()
        assert client.get_model_config("add")["max_batch_size"] == 5
        client.load_model("add")
        assert client.get_model_config("add")["max_batch_size"] == 8


def test_http_files_are_base64(
    server: ServerProcess, client: grpcclient.InferenceServerClient, scratch: Path
) -> None:
    model = base64.b64encode(onnx_bytes(scratch, 6, 7.0)).decode()
    body = {"parameters": {"config": config_json("web", width=6), "file:1/model.onnx": model}}
    assert _post(server, "/v2/repository/models/web/load", body) == (200, "")
    np.testing.assert_array_equal(infer(client, "web", 6), np.full((1, 6), 7.0))
    status, text = _post(
        server,
        "/v2/repository/models/web/load",
        {"parameters": {"config": config_json("web", width=6), "file:../escape": model}},
    )
    assert status == 400 and "file:../escape" in text
    np.testing.assert_array_equal(infer(client, "web", 6), np.full((1, 6), 7.0))
    status, text = _post(
        server,
        "/v2/repository/models/web/load",
        {"parameters": {"config": config_json("web", width=6), "file:1/model.onnx": "not base64!"}},
    )
    assert status == 400 and "base64" in text
    client.unload_model("web")
    assert override_folders(scratch) == []
    assert server.http_address is not None
    with httpclient.InferenceServerClient(server.http_address) as web:  # Triton's HTTP client, files
        files = {"file:1/model.onnx": onnx_bytes(scratch, 6, 9.0)}
        web.load_model("web", config=config_json("web", width=6), files=files)
        assert web.get_model_config("web")["input"][0]["dims"] == [6]
        np.testing.assert_array_equal(infer(client, "web", 6), np.full((1, 6), 9.0))
        with pytest.raises(InferenceServerException) as info:
            web.load_model("web", config=config_json("web", width=6), files={"file:/etc/x": b"1"})
        assert info.value.status() == "400" and "must be a relative path" in info.value.message()
        np.testing.assert_array_equal(infer(client, "web", 6), np.full((1, 6), 9.0))
        web.unload_model("web")
    assert override_folders(scratch) == []


def test_overrides_need_the_admin_token_when_one_is_set(tmp_path: Path, scratch: Path) -> None:
    root = write_add_repository(tmp_path / "repo", "add")
    (tmp_path / "token").write_text("s3cret\n")
    flags = ("--admin-token-file", str(tmp_path / "token"))
    server = start_with_temp(root, tmp_path / "server.log", tmp_path / "temp", *flags)
    try:
        files = {"file:1/model.onnx": onnx_bytes(scratch, 4, 4.0)}
        with grpcclient.InferenceServerClient(server.grpc_address) as client:
            with pytest.raises(InferenceServerException) as info:
                client.load_model("fresh", config=config_json("fresh"), files=files)
            assert info.value.status() == "StatusCode.UNAUTHENTICATED"
            assert not client.is_model_ready("fresh")
            client.load_model(
                "fresh", config=config_json("fresh"), files=files, headers={"authorization": "Bearer s3cret"}
            )
            np.testing.assert_array_equal(infer(client, "fresh"), np.full((1, 4), 4.0))
        body = {"parameters": {"config": config_json("add", max_batch_size=2)}}
        status, text = _post(server, "/v2/repository/models/add/load", body)
        assert status == 401 and "missing admin token" in text
        status, text = _post(server, "/v2/repository/models/add/load", body, {"authorization": "Bearer nope"})
        assert status == 401 and "wrong admin token" in text
        assert _post(server, "/v2/repository/models/add/unload", {})[0] == 401
        bearer = {"authorization": "Bearer s3cret"}
        assert _post(server, "/v2/repository/models/add/load", body, bearer) == (200, "")
        assert len(override_folders(tmp_path, "temp")) == 1  # "fresh" still loaded from its files
    finally:
        assert server.stop() == 0, server.log()[-3000:]
    assert override_folders(tmp_path, "temp") == []  # removed at shutdown
