"""Assembling the server: `create_server(settings)` builds every part and injects it; nothing global.

Shutdown order: stop taking new RPCs (and report not ready) → let running RPCs finish within the
grace period → drain every batcher → unload models.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.process_collector import ProcessCollector

from serving.api.inference_servicer import InferenceServicer
from serving.backends.base import Backend, Placement
from serving.backends.devices import DeviceInventory, detect_inventory, plan_placements
from serving.backends.loader import create_backend, gpu_capable
from serving.config import ServerSettings
from serving.dataplane import DataPlane
from serving.proto import inference_pb2_grpc
from serving.registry import ModelRegistry
from serving.repository import ModelRepository, ModelSpec, VersionSource

log = logging.getLogger("serving.server")


@dataclass
class BoundPorts:
    grpc: int
    metrics: int | None


class ServingServer:
    def __init__(self, settings: ServerSettings, inventory: DeviceInventory | None = None) -> None:
        self.settings = settings
        self.inventory = inventory or detect_inventory()
        self.metrics_registry = CollectorRegistry()
        ProcessCollector(registry=self.metrics_registry)
        self.registry = ModelRegistry(
            ModelRepository(settings.model_repository), self._load_backend, self._plan
        )
        self.ready = asyncio.Event()
        self._grpc = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", settings.max_message_bytes),
                ("grpc.max_send_message_length", settings.max_message_bytes),
                ("grpc.so_reuseport", 0),
            ]
        )
        servicer = InferenceServicer(self.registry, DataPlane(self.registry), self.ready)
        inference_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, self._grpc)  # type: ignore[no-untyped-call]
        self.ports = BoundPorts(grpc=0, metrics=None)
        self._metrics_http: Any = None

    def _plan(self, spec: ModelSpec, source: VersionSource) -> list[Placement]:
        capable = gpu_capable(source.platform, self.inventory)
        placements: list[Placement] = []
        for group in spec.instance_groups:
            placements += plan_placements(
                group.kind, group.count, group.gpus, self.inventory, gpu_capable=capable
            )
        return placements

    def _load_backend(self, source: VersionSource, spec: ModelSpec, placement: Placement) -> Backend:
        return create_backend(
            source.platform,
            source.model_file,
            placement,
            spec.parameters,
            self.inventory,
            [(t.name, t.dtype) for t in spec.inputs],
            [(t.name, t.dtype) for t in spec.outputs],
        )

    async def start(self) -> BoundPorts:
        """Bind the ports, serve, then load the models; ServerReady turns true once they are loaded."""
        address = f"{self.settings.host}:{self.settings.grpc_port}"
        self.ports.grpc = self._grpc.add_insecure_port(address)
        if self.ports.grpc == 0:
            raise OSError(f"cannot bind gRPC on {address}")
        if self.settings.metrics_port is not None:
            server, _thread = start_http_server(
                self.settings.metrics_port, addr=self.settings.host, registry=self.metrics_registry
            )
            self._metrics_http = server
            self.ports.metrics = int(server.server_port)
        await self._grpc.start()
        log.info("gRPC listening on %s:%d, devices: %s", self.settings.host, self.ports.grpc, self.inventory)
        await self._initial_load()
        self.ready.set()
        log.info(
            "ready grpc=%s:%d metrics=%s",
            self.settings.host,
            self.ports.grpc,
            f"{self.settings.host}:{self.ports.metrics}" if self.ports.metrics else "off",
        )
        return self.ports

    async def _initial_load(self) -> None:
        if self.settings.load_models:
            results = await asyncio.gather(
                *(self.registry.load(name) for name in self.settings.load_models), return_exceptions=True
            )
            for name, result in zip(self.settings.load_models, results, strict=True):
                if isinstance(result, BaseException):
                    log.error("--load-model %s: %s", name, result)
        else:
            await self.registry.load_all()

    async def stop(self, grace_s: float | None = None) -> None:
        grace = self.settings.grace_period_s if grace_s is None else grace_s
        self.ready.clear()
        await self._grpc.stop(grace)
        await self.registry.close()
        if self._metrics_http is not None:
            shutdown = self._metrics_http.shutdown
            await asyncio.to_thread(shutdown)
        log.info("stopped")

    async def wait_for_termination(self) -> None:
        await self._grpc.wait_for_termination()


def create_server(settings: ServerSettings, inventory: DeviceInventory | None = None) -> ServingServer:
    return ServingServer(settings, inventory)
