"""TLS and mutual TLS for the server's ports, and the client side of it for `serving ctl` and loadtests.

Server (`--tls-cert`, `--tls-key`, optional `--tls-client-ca`): the gRPC port, the separate admin port
and the HTTP port all serve TLS only (a plaintext client fails its handshake). With a client CA every
client must present a certificate signed by it (mutual TLS); a client without one is refused during the
handshake, before any RPC runs. /metrics stays plaintext (read-only; see docs/security.md).

Client (`--tls-ca`, `--tls-cert`, `--tls-key`): the CA that signed the server's certificate (default: the
system's roots) and, for mutual TLS, the client's own certificate and key.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc


@dataclass(frozen=True)
class ServerTls:
    cert: Path
    key: Path
    client_ca: Path | None = None  # set: clients must present a certificate signed by it

    def grpc_credentials(self) -> grpc.ServerCredentials:
        client_ca = self.client_ca.read_bytes() if self.client_ca is not None else None
        return grpc.ssl_server_credentials(
            [(self.key.read_bytes(), self.cert.read_bytes())],
            root_certificates=client_ca,
            require_client_auth=client_ca is not None,
        )

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert, self.key)
        if self.client_ca is not None:
            context.load_verify_locations(cafile=self.client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
        return context


def check_server_files(cert: Path | None, key: Path | None, client_ca: Path | None) -> ServerTls | None:
    """The server's TLS settings, or None for plaintext; ValueError naming the flag when inconsistent."""
    if cert is None and key is None:
        if client_ca is not None:
            raise ValueError("tls_client_ca: needs tls_cert and tls_key (mutual TLS is TLS first)")
        return None
    if cert is None or key is None:
        raise ValueError("tls_cert and tls_key: give both (the server's certificate and its private key)")
    for name, path in (("tls_cert", cert), ("tls_key", key), ("tls_client_ca", client_ca)):
        if path is not None and not path.is_file():
            raise ValueError(f"{name}: {path} is not a file")
    tls = ServerTls(cert, key, client_ca)
    try:
        tls.ssl_context()
    except (ssl.SSLError, OSError) as exc:
        raise ValueError(f"tls_cert/tls_key/tls_client_ca: cannot be used: {exc}") from None
    return tls


@dataclass(frozen=True)
class ClientTls:
    """A client's TLS files; all optional (`ca` None: the system's roots)."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    def grpc_credentials(self) -> grpc.ChannelCredentials:
        if (self.cert is None) != (self.key is None):
            raise ValueError("--tls-cert and --tls-key: give both, or neither")
        return grpc.ssl_channel_credentials(
            root_certificates=None if self.ca is None else self.ca.read_bytes(),
            private_key=None if self.key is None else self.key.read_bytes(),
            certificate_chain=None if self.cert is None else self.cert.read_bytes(),
        )


def client_tls(
    ca: Path | None, cert: Path | None, key: Path | None, enabled: bool = False
) -> ClientTls | None:
    """The client's TLS when any file is given (or `enabled`, for the system's roots); None: plaintext."""
    if ca is None and cert is None and key is None and not enabled:
        return None
    return ClientTls(ca, cert, key)
