"""TLS and mutual TLS through the real server, with certificates made for the test (tests/certificates.py):
plaintext clients and clients without a trusted certificate are refused on gRPC and HTTP; tritonclient
(grpc and http) with ssl and `serving ctl` with the --tls-* flags are served."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from serving.proto import inference_pb2 as ipb
from serving.proto import inference_pb2_grpc
from tests.certificates import Certificates, Pair, make_certificates
from tests.model_factory import write_add_repository
from tests.servers import ROOT, ServerProcess, start_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def mtls_server(tmp_path_factory: pytest.TempPathFactory, certs: Certificates) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("mtls")
    flags = ("--tls-cert", str(certs.server.cert), "--tls-key", str(certs.server.key))
    server = start_server(
        write_add_repository(root / "repo", "m"), root / "s.log", *flags, "--tls-client-ca", str(certs.ca)
    )
    yield server
    server.stop()


def grpc_ready(channel: grpc.Channel) -> bool:
    stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
    return bool(stub.ServerReady(ipb.ServerReadyRequest(), timeout=10).ready)


def credentials(ca: Path, pair: Pair | None) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        ca.read_bytes(),
        None if pair is None else pair.key.read_bytes(),
        None if pair is None else pair.cert.read_bytes(),
    )


def refused(call: object) -> str:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE, info.value.details()
    return info.value.details() or ""


def test_grpc_refuses_plaintext_and_clients_without_a_trusted_certificate(
    mtls_server: ServerProcess, certs: Certificates
) -> None:
    address = mtls_server.grpc_address
    with grpc.insecure_channel(address) as channel:
        refused(lambda: grpc_ready(channel))
    with grpc.secure_channel(address, credentials(certs.ca, None)) as channel:
        refused(lambda: grpc_ready(channel))  # TLS, but no client certificate
    with grpc.secure_channel(address, credentials(certs.ca, certs.untrusted_client)) as channel:
        refused(lambda: grpc_ready(channel))  # a certificate from another CA
    with grpc.secure_channel(address, credentials(certs.other_ca, certs.client)) as channel:
        refused(lambda: grpc_ready(channel))  # the client does not trust the server's CA
    with grpc.secure_channel(address, credentials(certs.ca, certs.client)) as channel:
        assert grpc_ready(channel)


def test_tritonclient_grpc_with_ssl(mtls_server: ServerProcess, certs: Certificates) -> None:
    client = grpcclient.InferenceServerClient(
        mtls_server.grpc_address,
        ssl=True,
        root_certificates=str(certs.ca),
        private_key=str(certs.client.key),
        certificate_chain=str(certs.client.cert),
    )
    assert client.is_server_ready()
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    tensor = grpcclient.InferInput("x", [2, 4], "FP32")
    tensor.set_data_from_numpy(x)
    result = client.infer("m", [tensor])
    np.testing.assert_array_equal(result.as_numpy("y"), x + 1)
    client.close()


def test_http_refuses_plaintext_and_clients_without_a_certificate(
    mtls_server: ServerProcess, certs: Certificates
) -> None:
    port = mtls_server.http_address.rpartition(":")[2] if mtls_server.http_address else ""
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=10)
    context = ssl.create_default_context(cafile=certs.ca)
    with pytest.raises((urllib.error.URLError, ConnectionError, ssl.SSLError)):
        urllib.request.urlopen(f"https://127.0.0.1:{port}/v2/health/ready", timeout=10, context=context)
    context.load_cert_chain(certs.client.cert, certs.client.key)
    with urllib.request.urlopen(
        f"https://127.0.0.1:{port}/v2/health/ready", timeout=10, context=context
    ) as r:
        assert r.status == 200


def test_tritonclient_http_with_ssl(mtls_server: ServerProcess, certs: Certificates) -> None:
    assert mtls_server.http_address is not None
    client = httpclient.InferenceServerClient(
        mtls_server.http_address,
        ssl=True,
        ssl_options={
            "ca_certs": str(certs.ca),
            "certfile": str(certs.client.cert),
            "keyfile": str(certs.client.key),
        },
    )
    assert client.is_server_ready()
    x = np.ones((1, 4), dtype=np.float32)
    tensor = httpclient.InferInput("x", [1, 4], "FP32")
    tensor.set_data_from_numpy(x)
    np.testing.assert_array_equal(client.infer("m", [tensor]).as_numpy("y"), x + 1)
    client.close()


def ctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "serving", "ctl", *args], capture_output=True, text=True, cwd=ROOT, timeout=60
    )


def test_serving_ctl_over_mutual_tls(mtls_server: ServerProcess, certs: Certificates) -> None:
    url = ("--url", mtls_server.grpc_address, "--timeout", "10")
    tls = (
        "--tls-ca",
        str(certs.ca),
        "--tls-cert",
        str(certs.client.cert),
        "--tls-key",
        str(certs.client.key),
    )
    result = ctl(*url, *tls, "index")
    assert result.returncode == 0, result.stderr
    assert "m" in result.stdout and "READY" in result.stdout
    result = ctl(*url, *tls, "versions", "m")  # admin over loopback + mTLS
    assert result.returncode == 0 and "READY" in result.stdout, result.stderr
    result = ctl(*url, "index")  # plaintext
    assert result.returncode == 1 and "UNAVAILABLE" in result.stderr
    result = ctl(*url, "--tls-ca", str(certs.ca), "index")  # no client certificate
    assert result.returncode == 1 and "UNAVAILABLE" in result.stderr
    result = ctl(*url, "--tls-ca", str(certs.ca), "--tls-cert", str(certs.client.cert), "index")
    assert result.returncode == 2 and "--tls-key" in result.stderr


def test_server_tls_flags_are_checked(tmp_path: Path, certs: Certificates) -> None:
    repo = write_add_repository(tmp_path / "repo", "m")
    base = [sys.executable, "-m", "serving", "serve", "--model-repository", str(repo)]
    cases = {
        ("--tls-cert", str(certs.server.cert)): "give both",
        ("--tls-client-ca", str(certs.ca)): "needs tls_cert",
        ("--tls-cert", str(certs.server.cert), "--tls-key", str(certs.client.key)): "cannot be used",
        ("--tls-cert", str(certs.server.cert), "--tls-key", str(tmp_path / "nope")): "is not a file",
    }
    for flags, message in cases.items():
        result = subprocess.run([*base, *flags], capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert result.returncode == 2 and message in result.stderr, (flags, result.stderr)


def loadtest(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "loadtests", "run", "--model", "m", "--concurrency", "2"]
    command += ["--duration", "1s", "--warmup", "0s", "--progress", "none", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_loadtests_over_mutual_tls(mtls_server: ServerProcess, certs: Certificates) -> None:
    url = ("--url", mtls_server.grpc_address)
    tls = (
        "--tls-ca",
        str(certs.ca),
        "--tls-cert",
        str(certs.client.cert),
        "--tls-key",
        str(certs.client.key),
    )
    result = loadtest(*url, *tls, "--slo", "errors<=0")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    plain = loadtest(*url)
    assert plain.returncode != 0 and "UNAVAILABLE" in plain.stdout + plain.stderr
    half = loadtest(*url, "--tls-ca", str(certs.ca), "--tls-key", str(certs.client.key))
    assert half.returncode != 0 and "--tls-cert and --tls-key" in half.stdout + half.stderr


def test_the_container_health_check_over_mutual_tls(mtls_server: ServerProcess, certs: Certificates) -> None:
    script = [sys.executable, str(ROOT / "deploy" / "docker" / "healthcheck.py"), mtls_server.grpc_address]
    plain = subprocess.run(script, capture_output=True, text=True, timeout=60)
    assert plain.returncode == 1 and "UNAVAILABLE" in plain.stdout
    env = {
        "SERVING_HEALTHCHECK_TLS_CA": str(certs.ca),
        "SERVING_HEALTHCHECK_TLS_CERT": str(certs.client.cert),
        "SERVING_HEALTHCHECK_TLS_KEY": str(certs.client.key),
    }
    result = subprocess.run(script, capture_output=True, text=True, timeout=60, env={**os.environ, **env})
    assert result.returncode == 0 and "SERVING" in result.stdout, result.stdout + result.stderr
