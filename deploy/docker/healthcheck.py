"""Container health check: grpc.health.v1 Check on the server's gRPC port; exit 0 only when SERVING.

    python healthcheck.py [HOST:PORT (default 127.0.0.1:8001)] [--service NAME] [--timeout S]

The image's HEALTHCHECK runs it (Kubernetes uses its native `grpc` probe instead). Service "" is the
whole server: SERVING from the end of the startup load until shutdown begins.
"""

from __future__ import annotations

import argparse
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check(address: str, service: str, timeout_s: float) -> tuple[bool, str]:
    with grpc.insecure_channel(address) as channel:
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
    args = parser.parse_args(argv)
    healthy, text = check(args.address, args.service, args.timeout)
    print(text)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
