"""Assembling the server: `create_server(settings)` builds every part and injects it; nothing global.

KServe v2 over HTTP (serving/api/http) runs beside gRPC in the same event loop, on the same facade
(serving.core.service.InferenceService), unless `http_port` is None.
The admin service (serving.admin.ModelAdmin) shares the gRPC port unless `admin_port` gives it its own
server on `admin_host`; the admin guard (serving/api/auth.py: the token, or loopback peers only without
one) checks the admin calls on both, as each call is admitted (serving/api/calls.py).

Shutdown order: stop polling the repository → stop taking new RPCs and HTTP requests (and report not
ready) → let running ones finish within the grace period → let shadow copies finish → drain every
batcher → unload models → stop the drift engine and /metrics. Observability (metrics, drift, health,
reflection, access log) is assembled in serving/api/instrumentation.py.

With `frontends` >= 2 this process is the model worker: it serves gRPC on a unix socket only, and N
front-end processes (serving/frontends) share the public gRPC port; HTTP, /metrics and a separate admin
port stay here. Shutdown then drains the front-ends (their accepted calls complete) before the rest.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, replace

import grpc
from prometheus_client import CollectorRegistry

from serving.admin.operations import ModelAdmin
from serving.api.admin_servicer import ModelAdminServicer
from serving.api.admission import AdmissionGate
from serving.api.auth import AdminGuard, read_token
from serving.api.calls import CallPolicy
from serving.api.http.server import HttpFrontEnd
from serving.api.inference_servicer import InferenceServicer
from serving.api.instrumentation import Monitoring
from serving.api.request_guard import InferGuard
from serving.api.tls import ServerTls
from serving.backends.base import Backend, Placement, TensorDecl
from serving.backends.devices import DeviceInventory, detect_inventory, plan_placements
from serving.backends.host_memory import pin_host_memory
from serving.backends.loader import create_backend, gpu_capable
from serving.backends.reshape import with_reshape
from serving.config import ServerSettings
from serving.core.dataplane import DataPlane
from serving.core.service import InferenceService
from serving.frontends.frontend import FrontEndOptions
from serving.frontends.supervisor import FrontEndCollector, FrontEndPool
from serving.lifecycle.control import POLL, ModelControl
from serving.lifecycle.poller import RepositoryPoller, scan_repository
from serving.lifecycle.registry import ModelRegistry
from serving.lifecycle.repository import ModelRepository, ModelSpec, VersionSource
from serving.proto import admin_pb2, inference_pb2
from serving.rollout.controller import RolloutController
from serving.rollout.evidence import EvidenceSource
from serving.rollout.metrics import RolloutMetrics
from serving.shared_memory.regions import SharedMemoryRegions
from serving.telemetry.runtime import RuntimeCollector
from serving.traffic.router import TrafficControl
from serving.traffic.shadow import ShadowRunner
from serving.traffic.store import PolicyStore

log = logging.getLogger("serving.server")


@dataclass
class BoundPorts:
    grpc: int
    metrics: int | None
    admin: int | None = None  # None: the admin service is on the gRPC port
    http: int | None = None  # None: no HTTP endpoint


class ServingServer:
    def __init__(self, settings: ServerSettings, inventory: DeviceInventory | None = None) -> None:
        self.settings = settings
        self.inventory = inventory or detect_inventory()
        self.metrics_registry = CollectorRegistry()
        self.monitoring = Monitoring(
            self.metrics_registry,
            drift_interval_s=settings.drift_interval_s,
            access_log_sample_rate=settings.access_log_sample_rate,
        )
        metrics = self.monitoring.metrics
        self.registry = ModelRegistry(
            ModelRepository(settings.model_repository),
            self._load_backend,
            self._plan,
            self.monitoring.telemetry,
            default_max_queue_size=settings.default_max_queue_size,
        )
        self.ready = asyncio.Event()
        store = PolicyStore(settings.model_repository, history_limit=settings.policy_history_limit)
        self.traffic = TrafficControl(store, observer=metrics)
        self.shadows = ShadowRunner(observer=metrics)
        evidence = EvidenceSource(self.registry, self.shadows, self.metrics_registry, self.monitoring.drift)
        rollout_metrics = RolloutMetrics(self.metrics_registry)
        self.rollouts = RolloutController(self.registry, store, self.traffic, evidence, rollout_metrics)
        self.monitoring.attach(self.registry, self.ready, self.traffic)
        self.control = ModelControl(
            self.registry, self.traffic, self.shadows, mode=settings.model_control_mode
        )
        self._poller = (
            RepositoryPoller(
                settings.model_repository, self.control, self.traffic, settings.repository_poll_secs
            )
            if settings.model_control_mode == POLL
            else None
        )
        token_file = settings.admin_token_file  # admin calls: this token, or loopback peers only
        self._guard = AdminGuard(None if token_file is None else read_token(token_file))
        self.gate = AdmissionGate(settings.max_concurrent_rpcs)  # accepted calls, gRPC and HTTP
        self._grpc = self._grpc_server()
        dataplane = DataPlane(self.registry, self.traffic, self.shadows)
        self.service = InferenceService(
            self.registry,
            dataplane,
            self.ready,
            self.control,
            SharedMemoryRegions(gpu_count=self.inventory.gpu_count),
        )
        servicer = InferenceServicer(self.service, requests=self.monitoring.requests)
        self._http = (
            HttpFrontEnd(
                self.service,
                max_body_bytes=settings.max_message_bytes,
                shutdown_timeout_s=settings.grace_period_s,
                requests=self.monitoring.requests,
                admin_guard=self._guard,
                gate=self.gate,
            )
            if settings.http_port is not None
            else None
        )
        # Unparsable requests and too many or unknown inputs are refused before the servicer decodes.
        guard = InferGuard(settings.max_inputs_per_request, self._input_names)
        # With front-ends, they admit gRPC calls; calls they forward here must not be refused again.
        gate = AdmissionGate() if settings.frontends > 1 else self.gate
        calls = CallPolicy(gate, self._guard, guard, self.monitoring.requests)
        calls.register(servicer, self._grpc, inference_pb2, "GRPCInferenceService")
        self._admin_grpc = self._grpc if settings.admin_port is None else self._grpc_server()
        admin = ModelAdminServicer(ModelAdmin(self.registry, self.traffic, self.shadows), self.rollouts)
        admin_calls = calls if self._admin_grpc is self._grpc else replace(calls, gate=self.gate)
        admin_calls.register(admin, self._admin_grpc, admin_pb2, "ModelAdmin")
        services = [inference_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]]
        if self._admin_grpc is self._grpc:
            services += admin_pb2.DESCRIPTOR.services_by_name.values()
        self.monitoring.add_services(self._grpc, services)  # grpc.health.v1 and reflection
        self.ports = BoundPorts(grpc=0, metrics=None)
        self.frontends = self._frontend_pool() if settings.frontends > 1 else None

    def _frontend_pool(self) -> FrontEndPool:
        s = self.settings
        options = FrontEndOptions(
            host=s.host,
            port=s.grpc_port,
            worker_grpc="",
            link="",
            max_message_bytes=s.max_message_bytes,
            max_inputs_per_request=s.max_inputs_per_request,
            max_concurrent_rpcs=s.max_concurrent_rpcs,
            grace_period_s=s.grace_period_s,
            admin_token_file=None if s.admin_token_file is None else str(s.admin_token_file),
            tls_cert=None if s.tls_cert is None else str(s.tls_cert),
            tls_key=None if s.tls_key is None else str(s.tls_key),
            tls_client_ca=None if s.tls_client_ca is None else str(s.tls_client_ca),
            log_format=s.log_format,
            log_level=s.log_level,
        )
        pin = pin_host_memory if self.inventory.gpu_count else None  # slots straight to the GPU
        pool = FrontEndPool(s.frontends, options, self.service, self.monitoring.requests, pin)
        self.metrics_registry.register(FrontEndCollector(pool))
        return pool

    def _grpc_server(self) -> grpc.aio.Server:
        """A gRPC server without interceptors: serving/api/calls.py wraps each handler once instead."""
        return grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", self.settings.max_message_bytes),
                ("grpc.max_send_message_length", self.settings.max_message_bytes),
                ("grpc.so_reuseport", 0),
            ],
        )

    def _input_names(self, model_name: str) -> frozenset[str] | None:
        """The input names of `model_name`'s config when it is loaded (None: not loaded)."""
        model = self.registry.loaded_model(model_name)
        return None if model is None or model.spec is None else model.spec.input_names

    def _plan(self, spec: ModelSpec, source: VersionSource) -> list[Placement]:
        capable = gpu_capable(source.platform, self.inventory)
        placements: list[Placement] = []
        for group in spec.instance_groups:
            placements += plan_placements(
                group.kind, group.count, group.gpus, self.inventory, gpu_capable=capable
            )
        return placements

    def _load_backend(self, source: VersionSource, spec: ModelSpec, placement: Placement) -> Backend:
        backend = create_backend(
            source.platform,
            source.model_file,
            placement,
            spec.parameters,
            self.inventory,
            [TensorDecl(t.name, t.dtype, t.model_dims) for t in spec.inputs],
            [TensorDecl(t.name, t.dtype, t.model_dims) for t in spec.outputs],
            spec.max_batch_size,
        )
        return with_reshape(
            backend,
            {t.name: t.reshape for t in spec.inputs if t.reshape is not None},  # client dims → model's
            {t.name: t.dims for t in spec.outputs if t.reshape is not None},  # model's → client dims
            spec.max_batch_size > 0,
        )

    async def start(self) -> BoundPorts:
        """Bind the ports, serve, then load the models; ServerReady turns true once they are loaded."""
        if self.settings.torch_threads is not None:
            from serving.backends.torch import set_torch_threads  # torch is imported only when used

            set_torch_threads(self.settings.torch_threads)
        address = f"{self.settings.host}:{self.settings.grpc_port}"
        tls = self.settings.tls  # every port but /metrics: TLS only when set (serving/api/tls.py)
        if self.frontends is None:
            self.ports.grpc = _bind(self._grpc, address, tls)
        elif self._grpc.add_insecure_port(self.frontends.worker_address):
            self.ports.grpc = self.frontends.reserve()  # the front-ends' port
        if self.ports.grpc == 0:
            raise OSError(f"cannot bind gRPC on {address}")
        if self.settings.admin_port is not None:
            admin_address = f"{self.settings.admin_host}:{self.settings.admin_port}"
            self.ports.admin = _bind(self._admin_grpc, admin_address, tls)
            if self.ports.admin == 0:
                raise OSError(f"cannot bind the admin service on {admin_address}")
        self.metrics_registry.register(RuntimeCollector(asyncio.get_running_loop()))
        self.ports.metrics = self.monitoring.start(self.settings.host, self.settings.metrics_port)
        if self._http is not None and self.settings.http_port is not None:
            context = None if tls is None else tls.ssl_context()
            self.ports.http = await self._http.start(self.settings.host, self.settings.http_port, context)
        await self._grpc.start()
        if self._admin_grpc is not self._grpc:
            await self._admin_grpc.start()
        if self.frontends is not None:
            await self.frontends.start()
            log.info("%d front-ends serve gRPC: pids %s", self.frontends.count, self.frontends.pids)
        log.info("gRPC listening on %s:%d, devices: %s", self.settings.host, self.ports.grpc, self.inventory)
        await self._initial_load()
        self.rollouts.start_loop()  # resumes persisted rollouts at their step
        self.ready.set()
        log.info(
            "ready grpc=%s:%d metrics=%s admin=%s http=%s",
            self.settings.host,
            self.ports.grpc,
            f"{self.settings.host}:{self.ports.metrics}" if self.ports.metrics else "off",
            f"{self.settings.admin_host}:{self.ports.admin}" if self.ports.admin else "grpc",
            f"{self.settings.host}:{self.ports.http}" if self.ports.http else "off",
        )
        return self.ports

    async def _initial_load(self) -> None:
        if self._poller is None:
            await self.control.load_startup(self.control.startup_models(self.settings.load_models))
            return
        snapshot = await asyncio.to_thread(scan_repository, self.settings.model_repository)
        await self.control.load_startup(sorted(snapshot))
        self._poller.prime(snapshot)
        self._poller.start()

    async def stop(self, grace_s: float | None = None) -> None:
        """Drain, then stop: not ready and NOT_SERVING at once, every new call refused (UNAVAILABLE),
        every accepted call left to finish within the grace period, then the transports and models."""
        grace = self.settings.grace_period_s if grace_s is None else grace_s
        deadline = time.monotonic() + grace
        self.ready.clear()
        self.monitoring.begin_shutdown()  # health: NOT_SERVING, watches end
        self.gate.begin_drain()
        if self._poller is not None:
            await self._poller.stop()
        if self.frontends is not None:  # their accepted calls complete before anything below stops
            await self.frontends.drain(deadline - time.monotonic())
        running = self.gate.in_flight
        if not await self.gate.drained(deadline - time.monotonic()):
            log.warning(
                "grace period over: %d of %d calls still running are cancelled", self.gate.in_flight, running
            )
        log.info("drained %d accepted calls in %.3fs", running, grace - (deadline - time.monotonic()))
        await self.monitoring.watches_ended(deadline - time.monotonic())  # NOT_SERVING sent
        # server.stop(grace) cancels whatever still runs when `grace` ends: nothing accepted is left now
        left = max(deadline - time.monotonic(), 0.0)
        servers = {id(s): s for s in (self._grpc, self._admin_grpc)}.values()
        http = [self._http.stop(left)] if self._http is not None else []
        await asyncio.gather(*(server.stop(left) for server in servers), *http)
        if self.frontends is not None:
            await self.frontends.close()
        await self.rollouts.stop()
        await self.shadows.close()
        await self.registry.close()
        self.control.close()  # temporary folders of `file:` overrides
        await self.monitoring.stop()
        log.info("stopped")

    async def wait_for_termination(self) -> None:
        await self._grpc.wait_for_termination()


def _bind(server: grpc.aio.Server, address: str, tls: ServerTls | None) -> int:
    if tls is None:
        return int(server.add_insecure_port(address))
    return int(server.add_secure_port(address, tls.grpc_credentials()))


def create_server(settings: ServerSettings, inventory: DeviceInventory | None = None) -> ServingServer:
    return ServingServer(settings, inventory)
