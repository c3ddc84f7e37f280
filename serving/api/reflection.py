"""gRPC server reflection (grpc.reflection.v1alpha), so `grpcurl list` / `grpcurl describe` work.

Our generated messages live in serving's private descriptor pool (serving/proto/_pool.py, see
scripts/gen_protos.py), while grpc.health.v1 and the reflection service itself live in protobuf's default
pool. Reflection answers from one pool, so `reflection_pool` copies the files that define the served
services, with their dependencies, into a new pool built for this server; neither source pool changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import grpc
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import FileDescriptor, ServiceDescriptor
from grpc_reflection.v1alpha import reflection, reflection_pb2

REFLECTION_SERVICE = reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"]


def reflection_pool(files: Iterable[FileDescriptor]) -> descriptor_pool.DescriptorPool:
    """A new pool holding `files` and everything they import (dependencies added first)."""
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(file: FileDescriptor) -> None:
        if file.name in added:
            return
        for dependency in file.dependencies:
            add(dependency)
        pool.AddSerializedFile(file.serialized_pb)
        added.add(file.name)

    for file in files:
        add(file)
    return pool


def enable_reflection(server: grpc.aio.Server, services: Sequence[ServiceDescriptor]) -> None:
    """Serve reflection on `server` for `services` (the reflection service lists itself too)."""
    served = [*services, REFLECTION_SERVICE]
    pool = reflection_pool(service.file for service in served)
    reflection.enable_server_reflection([s.full_name for s in served], server, pool=pool)
