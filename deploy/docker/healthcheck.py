"""Container health check: grpc.health.v1 Check on the server's gRPC port; exit 0 only when SERVING.

    python healthcheck.py [HOST:PORT (default 127.0.0.1:8001)] [--service NAME] [--timeout S]
                          [--tls-ca CA] [--tls-cert CERT --tls-key KEY] [--tls-server-name NAME]

The image's HEALTHCHECK runs it (Kubernetes uses its native `grpc` probe instead). Service "" is the
whole server: SERVING from the end of the startup load until shutdown begins. Against a server started
with --tls-cert, give the CA (and, under mutual TLS, a client certificate and key); each flag also reads
SERVING_HEALTHCHECK_<FLAG> (e.g. SERVING_HEALTHCHECK_TLS_CA), so the image's HEALTHCHECK needs no change.
--tls-server-name: the name the server's certificate carries, when it does not name 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def _read(path: str | None) -> bytes | None:
    if not path:
        return None
    with open(path, "rb") as file:
        return file.read()


def open_channel(address: str, args: argparse.Namespace) -> grpc.Channel:
    if not (args.tls_ca or args.tls_cert or args.tls_key):
        return grpc.insecure_channel(address)
    credentials = grpc.ssl_channel_credentials(_read(args.tls_ca), _read(args.tls_key), _read(args.tls_cert))
    options = [("grpc.ssl_target_name_override", args.tls_server_name)] if args.tls_server_name else []
    return grpc.secure_channel(address, credentials, options=options)


def check(address: str, service: str, timeout_s: float, args: argparse.Namespace) -> tuple[bool, str]:
    with open_channel(address, args) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.RpcError as exc:
            return False, f"{address}: {exc.code().name}: {exc.details()}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return reply.status == health_pb2.HealthCheckResponse.SERVING, f"{address} {service!r}: {status}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="grpc.health.v1 check for the container")
    parser.add_argument("address", nargs="?", default="127.0.0.1:8001")
    parser.add_argument("--service", default="")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds")
    for flag, text in (
        ("tls-ca", "the CA that signed the server's certificate (PEM)"),
        ("tls-cert", "mutual TLS: the client certificate (PEM)"),
        ("tls-key", "mutual TLS: its private key (PEM)"),
        ("tls-server-name", "the name in the server's certificate, if not the address"),
    ):
        env = "SERVING_HEALTHCHECK_" + flag.upper().replace("-", "_")
        parser.add_argument(f"--{flag}", default=os.environ.get(env) or None, help=f"{text} [{env}]")
    args = parser.parse_args(argv)
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key: give both, or neither")
    try:
        healthy, text = check(args.address, args.service, args.timeout, args)
    except OSError as exc:
        print(f"{args.address}: cannot read a TLS file: {exc}")
        return 1
    print(text)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
