"""Through the real server: load and unload names that would leave the repository are refused with
INVALID_ARGUMENT, a model linked in from outside fails to load (saying why), and the server serves on."""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import pytest

from serving.proto import inference_pb2 as ipb
from serving.proto import inference_pb2_grpc
from tests.model_factory import write_add_repository
from tests.servers import start_server

pytestmark = pytest.mark.integration


def test_names_and_links_out_of_the_repository_are_refused(tmp_path: Path) -> None:
    write_add_repository(tmp_path / "outside", "stolen")
    repo = write_add_repository(tmp_path / "repo", "m")
    os.symlink(tmp_path / "outside" / "stolen", repo / "linked")
    server = start_server(repo, tmp_path / "s.log", "--load-model", "m")
    try:
        with grpc.insecure_channel(server.grpc_address) as channel:
            stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
            for name in ("../outside/stolen", "/etc", "a/b", "..", "x" * 5000):
                for call, request in (
                    (stub.RepositoryModelLoad, ipb.RepositoryModelLoadRequest(model_name=name)),
                    (stub.RepositoryModelUnload, ipb.RepositoryModelUnloadRequest(model_name=name)),
                ):
                    with pytest.raises(grpc.RpcError) as info:
                        call(request, timeout=30)
                    code, details = info.value.code(), info.value.details() or ""
                    if name.startswith("x"):  # one folder name, just not a model: NOT_FOUND, clipped
                        assert code == grpc.StatusCode.NOT_FOUND and len(details) < 1000, details
                    else:
                        assert code == grpc.StatusCode.INVALID_ARGUMENT, (name, details)
                        assert "one folder name" in details
            with pytest.raises(grpc.RpcError) as info:
                stub.RepositoryModelLoad(ipb.RepositoryModelLoadRequest(model_name="linked"), timeout=30)
            assert "outside the model repository" in (info.value.details() or ""), info.value.details()
            assert not stub.ModelReady(ipb.ModelReadyRequest(name="linked"), timeout=10).ready
            assert stub.ModelReady(ipb.ModelReadyRequest(name="m"), timeout=10).ready
    finally:
        server.stop()
