"""Safe by default, through the real server: without --admin-token-file the admin API and repository
load/unload (gRPC and HTTP) serve loopback clients only; with a token, any address that presents it.

A non-loopback client is this machine talking to itself over its own non-loopback interface address
(the server binds 0.0.0.0): the peer the server sees is then that address, not 127.0.0.1. Machines
without such an address skip those cases (and say so); the peer parsing is also tested as a unit.
"""

from __future__ import annotations

import ipaddress
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from serving.proto import admin_pb2 as apb
from serving.proto import admin_pb2_grpc, inference_pb2_grpc
from serving.proto import inference_pb2 as ipb
from tests.model_factory import write_add_repository
from tests.servers import ServerProcess, start_server

pytestmark = pytest.mark.integration


def own_non_loopback_ipv4() -> str | None:
    """An IPv4 address of one of this machine's own interfaces (from `ip -4 addr`), that a socket can
    bind to (so it is ours), or None."""
    try:
        text = subprocess.run(
            ["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True, text=True, timeout=5
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in text.splitlines():
        fields = line.split()
        if "inet" not in fields:
            continue
        address = fields[fields.index("inet") + 1].split("/")[0]
        if ipaddress.ip_address(address).is_loopback:
            continue
        with socket.socket() as probe:
            try:
                probe.bind((address, 0))
            except OSError:
                continue
        return address
    return None


OWN_ADDRESS = own_non_loopback_ipv4()
needs_own_address = pytest.mark.skipif(
    OWN_ADDRESS is None, reason="this machine has no non-loopback interface address to connect from"
)


def port_of(address: str) -> int:
    return int(address.rpartition(":")[2])


def call_code(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    return info.value.code(), info.value.details() or ""


def http_post(url: str, token: str | None = None) -> tuple[int, str]:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    request = urllib.request.Request(url, data=b"", method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def model_ready(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
        return bool(stub.ModelReady(ipb.ModelReadyRequest(name="m"), timeout=10).ready)


@pytest.fixture(scope="module", params=["1", "2"], ids=["one-process", "two-frontends"])
def open_server(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[ServerProcess]:
    """With --frontends 2 the front-ends apply the guard: only they know the client's address (the
    worker sees every forwarded call come from its own unix socket)."""
    root = tmp_path_factory.mktemp("loopback")
    repo = write_add_repository(root / "repo", "m")
    server = start_server(repo, root / "s.log", "--host", "0.0.0.0", "--frontends", request.param)
    yield server
    server.stop()


@needs_own_address
def test_without_a_token_other_addresses_cannot_administer(open_server: ServerProcess) -> None:
    remote = f"{OWN_ADDRESS}:{port_of(open_server.grpc_address)}"
    with grpc.insecure_channel(remote) as channel:
        inference = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
        admin = admin_pb2_grpc.ModelAdminStub(channel)
        unload = ipb.RepositoryModelUnloadRequest(model_name="m")
        code, details = call_code(lambda: inference.RepositoryModelUnload(unload, timeout=10))
        assert code == grpc.StatusCode.UNAUTHENTICATED, details
        assert "--admin-token-file" in details and OWN_ADDRESS in details
        load = ipb.RepositoryModelLoadRequest(model_name="m")
        assert call_code(lambda: inference.RepositoryModelLoad(load, timeout=10))[0] == (
            grpc.StatusCode.UNAUTHENTICATED
        )
        split = apb.SetSplitRequest(model="m", weights={1: 1.0})
        assert call_code(lambda: admin.SetSplit(split, timeout=10))[0] == grpc.StatusCode.UNAUTHENTICATED
        assert call_code(lambda: admin.Versions(apb.ModelRef(model="m"), timeout=10))[0] == (
            grpc.StatusCode.UNAUTHENTICATED
        )
        assert inference.ModelReady(ipb.ModelReadyRequest(name="m"), timeout=10).ready  # inference: open
    http_port = port_of(open_server.http_address or "")
    status, text = http_post(f"http://{OWN_ADDRESS}:{http_port}/v2/repository/models/m/unload")
    assert status == 401 and "--admin-token-file" in text, text
    assert model_ready(open_server.grpc_address)  # nothing changed


def test_without_a_token_loopback_administers(open_server: ServerProcess) -> None:
    local = f"127.0.0.1:{port_of(open_server.grpc_address)}"
    with grpc.insecure_channel(local) as channel:
        admin = admin_pb2_grpc.ModelAdminStub(channel)
        assert [v.version for v in admin.Versions(apb.ModelRef(model="m"), timeout=10).versions] == [1]
        inference = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
        inference.RepositoryModelUnload(ipb.RepositoryModelUnloadRequest(model_name="m"), timeout=30)
        assert not model_ready(local)
    http_port = port_of(open_server.http_address or "")
    assert http_post(f"http://127.0.0.1:{http_port}/v2/repository/models/m/load")[0] == 200
    assert model_ready(local)


@needs_own_address
def test_with_a_token_other_addresses_administer_with_it(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("s3cret\n")
    repo = write_add_repository(tmp_path / "repo", "m")
    server = start_server(
        repo, tmp_path / "s.log", "--host", "0.0.0.0", "--admin-token-file", str(tmp_path / "token")
    )
    try:
        remote = f"{OWN_ADDRESS}:{port_of(server.grpc_address)}"
        unload = ipb.RepositoryModelUnloadRequest(model_name="m")
        with grpc.insecure_channel(remote) as channel:
            inference = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
            for metadata in (
                (),
                (("authorization", "Bearer s3cre"),),
                (("authorization", "Bearer s3cret2"),),
            ):
                code, details = call_code(
                    lambda m=metadata: inference.RepositoryModelUnload(unload, metadata=m, timeout=10)
                )
                assert code == grpc.StatusCode.UNAUTHENTICATED, details
                assert model_ready(remote)  # a refused call changes nothing
            http_port = port_of(server.http_address or "")
            url = f"http://{OWN_ADDRESS}:{http_port}/v2/repository/models/m/unload"
            assert http_post(url, "wrong")[0] == 401 and model_ready(remote)
            inference.RepositoryModelUnload(
                unload, metadata=(("authorization", "Bearer s3cret"),), timeout=30
            )
            assert not model_ready(remote)
            assert http_post(url.replace("/unload", "/load"), "s3cret")[0] == 200
            assert model_ready(remote)
    finally:
        server.stop()
