"""grpc.health.v1.Health for Kubernetes gRPC probes, grpc_health_probe and load balancers.

Services and their status:
  ""  and  "inference.GRPCInferenceService"   SERVING from the end of the startup load until shutdown
                                              begins (ServerReady), else NOT_SERVING
  "<model name>"                              SERVING while the server is ready and the model has a READY
                                              version; NOT_SERVING while the model is in the repository or
                                              the registry without one
  anything else                               Check: NOT_FOUND; Watch: SERVICE_UNKNOWN (the protocol's rules)
List answers every service above (the server's two and every model of the registry and the repository).

Status is computed from the registry when asked, so it is never stale and nothing has to be kept in step
with loads and unloads. Watch re-reads it every `watch_interval_s` and sends each change; watches end once
shutdown begins (after sending NOT_SERVING), so they never hold up the server's grace period; the server
waits for them (`watches_ended`) before it stops gRPC, so NOT_SERVING reaches every watcher first.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from serving.errors import ModelConfigError
from serving.lifecycle.registry import ModelRegistry

SERVING: int = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING: int = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN: int = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
SERVER_SERVICES = frozenset({"", "inference.GRPCInferenceService"})
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"]


class HealthServicer(health_pb2_grpc.HealthServicer):  # type: ignore[misc]
    def __init__(
        self, registry: ModelRegistry, ready: asyncio.Event, *, watch_interval_s: float = 1.0
    ) -> None:
        self._registry = registry
        self._ready = ready
        self._watch_interval_s = watch_interval_s
        self._shutting_down = asyncio.Event()
        self._watches = 0  # Watch streams still open
        self._no_watches = asyncio.Event()
        self._no_watches.set()

    def status(self, service: str) -> int | None:
        """The service's ServingStatus, None for a service this server does not have."""
        ready = self._ready.is_set() and not self._shutting_down.is_set()
        if service in SERVER_SERVICES:
            return SERVING if ready else NOT_SERVING
        if self._registry.is_ready(service):
            return SERVING if ready else NOT_SERVING
        if service in self._registry.model_names() or service in self._repository_names():
            return NOT_SERVING
        return None

    def services(self) -> list[str]:
        names = {*self._registry.model_names(), *self._repository_names()}
        return sorted(SERVER_SERVICES) + sorted(names - SERVER_SERVICES)

    def _repository_names(self) -> list[str]:
        try:
            return self._registry.repository.model_names()
        except ModelConfigError:
            return []

    def begin_shutdown(self) -> None:
        """Report NOT_SERVING everywhere from now on, and end every Watch."""
        self._shutting_down.set()

    async def watches_ended(self, timeout_s: float) -> bool:
        """Wait (after begin_shutdown) until every Watch has sent NOT_SERVING and ended."""
        try:
            async with asyncio.timeout(max(timeout_s, 0.0)):
                await self._no_watches.wait()
        except TimeoutError:
            return False
        return True

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        status = self.status(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def List(
        self, request: health_pb2.HealthListRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthListResponse:
        reply = health_pb2.HealthListResponse()
        for service in self.services():
            status = self.status(service)
            if status is not None:
                reply.statuses[service].status = status
        return reply

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        self._watches += 1
        self._no_watches.clear()
        try:
            async for reply in self._watch(request.service):
                yield reply
        finally:
            self._watches -= 1
            if self._watches == 0:
                self._no_watches.set()

    async def _watch(self, service: str) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        last: int | None = None
        while True:
            # Read before the status: a shutdown that begins while this generator waits at its `yield`
            # (the reply still being sent) is seen on the next pass, which then sends NOT_SERVING.
            stopping = self._shutting_down.is_set()
            status = self.status(service)
            current = SERVICE_UNKNOWN if status is None else status
            if current != last:
                yield health_pb2.HealthCheckResponse(status=current)
                last = current
            if stopping:
                return
            try:
                await asyncio.wait_for(self._shutting_down.wait(), self._watch_interval_s)
            except TimeoutError:
                pass
