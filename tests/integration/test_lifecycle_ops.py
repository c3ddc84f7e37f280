"""The operator's side against real servers: restart and replicas, poll mode, admin auth, `serving ctl`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from serving.proto import admin_pb2 as apb
from serving.proto import admin_pb2_grpc, inference_pb2_grpc
from serving.proto import inference_pb2 as ipb
from tests.lifecycle_client import Admin, Load, admin_address, infer
from tests.model_factory import write_add_model, write_add_repository
from tests.servers import ROOT, ServerProcess, start_server

pytestmark = pytest.mark.integration

TOKEN = "s3cret-token"


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def key_map(address: str, keys: list[str]) -> dict[str, int]:
    with grpc.insecure_channel(address) as channel:
        stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
        return {key: infer(stub, "m", key=key) for key in keys}


def code_of(call: Callable[[], object]) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code()


def test_restart_keeps_the_policy_and_replicas_agree(tmp_path: Path) -> None:
    repo = write_add_repository(tmp_path / "repo", "m", versions=(1, 2))
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    flags = ("--admin-token-file", str(token_file))
    first = start_server(repo, tmp_path / "a.log", *flags)
    replica = start_server(repo, tmp_path / "b.log", *flags)
    try:
        admin = Admin(first.grpc_address, first.grpc_address, TOKEN)
        anonymous = Admin(first.grpc_address, first.grpc_address)
        assert code_of(lambda: anonymous.split("m", {1: 1})) == grpc.StatusCode.UNAUTHENTICATED
        assert code_of(lambda: anonymous.load("m")) == grpc.StatusCode.UNAUTHENTICATED
        policy = admin.split("m", {1: 50, 2: 50}, sticky=True)
        keys = [f"k{i}" for i in range(200)]
        mapping = key_map(first.grpc_address, keys)  # inference never needs the token
        assert set(mapping.values()) == {1, 2}
        admin.load("m")  # explicit load re-reads traffic.json, like a replica's poll or restart would
        Admin(replica.grpc_address, replica.grpc_address, TOKEN).load("m")
        assert key_map(replica.grpc_address, keys) == mapping  # every replica routes a key alike
        admin.close()
        anonymous.close()
        assert first.stop() == 0
        first = start_server(repo, tmp_path / "a2.log", *flags)
        admin = Admin(first.grpc_address, first.grpc_address, TOKEN)
        assert admin.policy("m").policy == policy
        assert key_map(first.grpc_address, keys) == mapping
        history = admin.admin.History(apb.HistoryRequest(model="m"), metadata=admin.metadata)
        assert [e.action for e in history.entries] == ["split"]
        admin.close()
    finally:
        for server in (first, replica):
            assert server.stop() == 0, server.log()[-2000:]


def index_states(admin: Admin) -> dict[str, str]:
    index = admin.inference.RepositoryIndex(ipb.RepositoryIndexRequest(), timeout=10)
    return {m.version: m.state for m in index.models if m.name == "m"}


def _copy_slowly(data: bytes, target: Path, seconds: float) -> None:
    """Write `data` to `target` in pieces over `seconds`, as a slow copy would."""
    target.parent.mkdir(parents=True, exist_ok=True)
    pieces = 25
    step = -(-len(data) // pieces)
    with open(target, "wb") as handle:
        for start in range(0, len(data), step):
            handle.write(data[start : start + step])
            handle.flush()
            time.sleep(seconds / pieces)


def _write_atomically(path: Path, text: str) -> None:
    temp = path.with_name(".edit.tmp")
    temp.write_text(text)
    os.replace(temp, path)


def test_poll_mode_follows_the_repository(tmp_path: Path) -> None:
    repo = write_add_repository(tmp_path / "repo", "m", versions=(1,))
    server = start_server(
        repo, tmp_path / "poll.log", "--model-control-mode", "poll", "--repository-poll-secs", "1"
    )
    admin = Admin(server.grpc_address, server.grpc_address)
    load = Load(server.grpc_address, "m", threads=2).start()
    try:
        assert code_of(lambda: admin.load("m")) == grpc.StatusCode.UNAVAILABLE  # poll mode: no explicit load
        write_add_model(tmp_path / "v2.onnx", 4, 2.0)
        _copy_slowly((tmp_path / "v2.onnx").read_bytes(), repo / "m" / "2" / "model.onnx", seconds=3.0)
        wait_for(lambda: admin.versions("m").get(2, apb.VersionStatus()).state == "READY", "v2 READY")
        assert "m v2: FAILED" not in server.log(), "a half-copied file was loaded"
        assert infer(admin.inference, "m") == 2  # no policy: the highest READY version serves

        _write_atomically(repo / "m" / "traffic.json", '{"weights": {"1": 100}}\n')
        wait_for(lambda: dict(admin.policy("m").policy.weights) == {1: 100.0}, "the edited policy in force")
        assert infer(admin.inference, "m") == 1
        history = admin.admin.History(apb.HistoryRequest(model="m"))
        assert [(e.action, e.source) for e in history.entries] == [("edit", "file")]

        _write_atomically(repo / "m" / "traffic.json", '{"weights": {"1": -5}}\n')
        wait_for(lambda: "weights[1]" in admin.policy("m").error, "the invalid policy rejected")
        assert dict(admin.policy("m").policy.weights) == {1: 100.0}  # the last good one stays
        assert infer(admin.inference, "m") == 1

        shutil.rmtree(repo / "m" / "2")
        wait_for(lambda: index_states(admin) == {"1": "READY", "2": "UNLOADED"}, "v2 unloaded")
    finally:
        samples = load.stop()
        admin.close()
        assert server.stop() == 0, server.log()[-2000:]
    assert samples and not [s for s in samples if s.error], [s for s in samples if s.error][:3]


def ctl(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "serving", "ctl", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=60)


@pytest.fixture
def guarded(tmp_path: Path) -> ServerProcess:
    repo = write_add_repository(tmp_path / "repo", "m", versions=(1, 2))
    (tmp_path / "token").write_text(TOKEN)
    server = start_server(
        repo, tmp_path / "s.log", "--admin-port", "0", "--admin-token-file", str(tmp_path / "token")
    )
    yield server  # type: ignore[misc]
    assert server.stop() == 0, server.log()[-2000:]


def test_admin_port_needs_the_token_and_inference_does_not(guarded: ServerProcess, tmp_path: Path) -> None:
    address = admin_address(guarded.log(), guarded.grpc_address)
    assert address.startswith("127.0.0.1:") and address != guarded.grpc_address  # loopback by default
    with grpc.insecure_channel(address) as channel, grpc.insecure_channel(guarded.grpc_address) as main:
        stub = admin_pb2_grpc.ModelAdminStub(channel)
        ref = apb.ModelRef(model="m")
        assert code_of(lambda: stub.Versions(ref)) == grpc.StatusCode.UNAUTHENTICATED
        wrong = [("authorization", "Bearer nope")]
        assert code_of(lambda: stub.Versions(ref, metadata=wrong)) == grpc.StatusCode.UNAUTHENTICATED
        right = [("authorization", f"Bearer {TOKEN}")]
        assert [v.state for v in stub.Versions(ref, metadata=right).versions] == ["READY", "READY"]
        moved = admin_pb2_grpc.ModelAdminStub(main)  # the admin service left the inference port
        assert code_of(lambda: moved.Versions(ref, metadata=right)) == grpc.StatusCode.UNIMPLEMENTED
        assert infer(inference_pb2_grpc.GRPCInferenceServiceStub(main), "m") == 2

    token = str(tmp_path / "token")
    result = ctl("--url", address, "--token-file", token, "split", "m", "1=90", "2=10", "--sticky")
    assert result.returncode == 0 and "1=90 2=10 sticky" in result.stdout, result.stderr
    result = ctl("--url", address, "--token-file", token, "versions", "m")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[0].split() == [
        "VERSION",
        "STATE",
        "TRAFFIC",
        "QUEUE",
        "IN-FLIGHT",
        "LOAD",
        "DEVICES",
        "REASON",
    ]
    assert "90.0%" in result.stdout and "policy: 1=90 2=10 sticky" in result.stdout
    result = ctl("--url", address, "versions", "m")
    assert result.returncode == 1 and "UNAUTHENTICATED" in result.stderr
    result = ctl("--url", address, "--token-file", token, "promote", "m", "9")
    assert result.returncode == 1 and "NOT_FOUND" in result.stderr and "version 9" in result.stderr
    result = ctl("--url", guarded.grpc_address, "--token-file", token, "load", "m")
    assert result.returncode == 0 and "m: loaded" in result.stdout, result.stderr
