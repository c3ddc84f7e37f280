"""Everything operators observe the server through, assembled for serving/server.py in one place.

    /metrics        ServingMetrics on the server's CollectorRegistry (process and GPU collectors included),
                    served over HTTP by `start`
    drift           DriftEngine: prediction distributions and drift scores, computed every
                    `drift_interval_s` on its own thread
    telemetry       serving.telemetry.observer.Telemetry, handed to the ModelRegistry: every version's
                    batcher, requests and lifecycle move VersionStats (ModelStatistics) and the metrics
                    together
    requests        RequestRecorder: status codes, end-to-end latency and the sampled access log, fed by
                    ModelInfer's handler (serving/api/calls.py) and the servicer (streams)
    health          grpc.health.v1, overall and per model;  reflection for every served service

Construction order (the registry needs the telemetry, the API parts need the registry):
`Monitoring(...)` → `ModelRegistry(..., telemetry=monitoring.telemetry)` → `attach(registry, ready)` →
`requests` for the servers' CallPolicy → `add_services(server, services)` → `start(host, port)`;
on shutdown `begin_shutdown()` before the gRPC server stops, `stop()` after the models unloaded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, Literal

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health_pb2_grpc
from prometheus_client import CollectorRegistry

from serving.api.health import HEALTH_SERVICE, HealthServicer
from serving.api.reflection import enable_reflection
from serving.api.request_log import RequestRecorder
from serving.drift.engine import DriftEngine
from serving.lifecycle.registry import ModelRegistry
from serving.telemetry.gpu import GpuProbe
from serving.telemetry.metrics import ServingMetrics, start_metrics_http
from serving.telemetry.observer import Telemetry
from serving.traffic.router import TrafficControl, traffic_shares

log = logging.getLogger("serving.monitoring")

TrafficShare = Callable[[str, int], float]


def traffic_share_of(registry: ModelRegistry, traffic: TrafficControl) -> TrafficShare:
    """(model, version) → the share of the model's routed requests the version gets now (0..1)."""

    def share(model: str, version: int) -> float:
        if model not in registry.model_names():
            return 0.0
        ready = [v.version for v in registry.model(model).ready_versions()]
        return traffic_shares(traffic.policy(model), ready).get(version, 0.0)

    return share


class Monitoring:
    def __init__(
        self,
        collector_registry: CollectorRegistry,
        *,
        drift_interval_s: float,
        access_log_sample_rate: float,
        gpu_probe: GpuProbe | None | Literal["auto"] = "auto",
    ) -> None:
        self.collector_registry = collector_registry
        self.metrics = ServingMetrics(collector_registry, gpu_probe=gpu_probe)
        self.drift = DriftEngine(self.metrics, drift_interval_s)
        self.telemetry = Telemetry(self.metrics, self.drift)
        self._sample_rate = access_log_sample_rate
        self._recorder: RequestRecorder | None = None
        self._health: HealthServicer | None = None
        self._http: Any = None

    def attach(
        self, registry: ModelRegistry, ready: asyncio.Event, traffic: TrafficControl | None = None
    ) -> None:
        """Build the parts that read the registry (the request recorder, the health service and each
        version's traffic share); call it before any model loads."""
        if traffic is not None:
            self.telemetry.traffic_share = traffic_share_of(registry, traffic)
        self._recorder = RequestRecorder(self.metrics, registry, sample_rate=self._sample_rate)
        self._health = HealthServicer(registry, ready)

    @property
    def requests(self) -> RequestRecorder:
        if self._recorder is None:
            raise RuntimeError("Monitoring.attach(registry, ready) has not been called")
        return self._recorder

    def add_services(self, server: grpc.aio.Server, services: Sequence[ServiceDescriptor]) -> None:
        """Register grpc.health.v1 on `server`, and reflection for `services`, health and itself."""
        if self._health is None:
            raise RuntimeError("Monitoring.attach(registry, ready) has not been called")
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        enable_reflection(server, [*services, HEALTH_SERVICE])

    def start(self, host: str, port: int | None) -> int | None:
        """Start the drift engine and, unless `port` is None, /metrics; returns the bound port."""
        self.drift.start()
        if port is None:
            return None
        self._http, bound = start_metrics_http(self.collector_registry, host, port)
        return bound

    def begin_shutdown(self) -> None:
        if self._health is not None:
            self._health.begin_shutdown()

    async def watches_ended(self, timeout_s: float) -> None:
        """Wait until every health Watch has sent NOT_SERVING and ended (at most `timeout_s`)."""
        if self._health is not None:
            await self._health.watches_ended(timeout_s)

    async def stop(self) -> None:
        self.drift.stop()
        if self._http is not None:
            http, self._http = self._http, None
            await asyncio.to_thread(http.shutdown)
            http.server_close()
