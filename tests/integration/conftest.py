"""Fixtures shared by the integration tests: a module's `server` fixture names the server; `client`
is a tritonclient gRPC client of it, closed after the test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import tritonclient.grpc as grpcclient

from tests.servers import ServerProcess


@pytest.fixture()
def client(server: ServerProcess) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(server.grpc_address) as c:
        yield c
