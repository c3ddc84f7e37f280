"""`FrontEndPool`: the model worker's side of `--frontends N` (N >= 2).

The worker keeps every part of the single-process server (models, batchers, lifecycle, traffic policy,
admin, health, statistics, /metrics, HTTP) and serves gRPC on a unix socket only. The pool reserves the
public gRPC port (a bound, never listening SO_REUSEPORT socket, so that port 0 resolves once and a
restarted front-end gets the same port), starts N front-end processes on it, and restarts any that
exits while the server runs (its own in-flight calls are lost with it: their clients see UNAVAILABLE).
`drain` sends SIGTERM to each and waits for them to finish their accepted calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import signal
import socket
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from serving.api.request_log import RequestRecorder
from serving.core.service import InferenceService
from serving.frontends.frontend import FrontEndOptions
from serving.frontends.link import Pin, WorkerLink

log = logging.getLogger("serving.frontends")
START_TIMEOUT_S = 60.0
RESTART_DELAY_S = 0.5


class FrontEndPool:
    def __init__(
        self,
        count: int,
        options: FrontEndOptions,
        service: InferenceService,
        recorder: RequestRecorder | None,
        pin: Pin | None = None,
    ) -> None:
        self.count = count
        self._folder = Path(tempfile.mkdtemp(prefix="serving-worker-"))
        self.worker_grpc = self._folder / "grpc.sock"
        self.link = WorkerLink(service, recorder, self._folder / "link.sock", pin)
        self._options = dataclasses.replace(
            options, worker_grpc=str(self.worker_grpc), link=str(self.link.path)
        )
        self._reservation: socket.socket | None = None
        self._processes: dict[int, asyncio.subprocess.Process] = {}
        self._watchers: list[asyncio.Task[None]] = []
        self._stopping = False
        self.restarts = 0

    @property
    def worker_address(self) -> str:
        return f"unix:{self.worker_grpc}"

    def reserve(self) -> int:
        """Reserve the public port (SO_REUSEPORT, never listening); returns it."""
        family = socket.AF_INET6 if ":" in self._options.host else socket.AF_INET
        reservation = socket.socket(family, socket.SOCK_STREAM)
        reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        reservation.bind((self._options.host, self._options.port))
        self._reservation = reservation
        port = int(reservation.getsockname()[1])
        self._options = dataclasses.replace(self._options, port=port)
        return port

    async def start(self) -> None:
        """Start the link and the front-ends; return once all of them are connected."""
        await self.link.start()
        self._watchers = [asyncio.create_task(self._keep(index)) for index in range(self.count)]
        await self.link.wait_for(self.count, START_TIMEOUT_S)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._processes.values() if p.returncode is None]

    async def _spawn(self) -> asyncio.subprocess.Process:
        text = json.dumps(dataclasses.asdict(self._options))
        return await asyncio.create_subprocess_exec(sys.executable, "-m", "serving.frontends.process", text)

    async def _keep(self, index: int) -> None:
        while not self._stopping:
            process = self._processes[index] = await self._spawn()
            log.info("front-end slot %d: started pid %d", index, process.pid)
            code = await process.wait()
            if self._stopping:
                return
            self.restarts += 1
            log.warning("front-end pid %d exited with %s; restarting it", process.pid, code)
            await asyncio.sleep(RESTART_DELAY_S)

    async def drain(self, timeout_s: float) -> None:
        """SIGTERM every front-end and wait (at most `timeout_s`, then SIGKILL) for them to exit."""
        self._stopping = True
        running = [p for p in self._processes.values() if p.returncode is None]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        waits = [asyncio.create_task(p.wait()) for p in running]
        if waits:
            _, late = await asyncio.wait(waits, timeout=max(timeout_s, 0.1))
            for process in running:
                if process.returncode is None:
                    log.warning("front-end pid %d did not drain in time; killed", process.pid)
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
            if late:
                await asyncio.wait(late)
        for watcher in self._watchers:
            watcher.cancel()

    async def close(self) -> None:
        await self.link.close()
        if self._reservation is not None:
            self._reservation.close()
        for path in (self.worker_grpc, self.link.path):
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self._folder.rmdir()


class FrontEndCollector:
    """/metrics: serving_frontends (connected front-ends), serving_frontend_restarts_total, and
    serving_frontend_requests_total by front-end index and pid (requests it sent through its ring)."""

    def __init__(self, pool: FrontEndPool) -> None:
        self._pool = pool

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        connected = GaugeMetricFamily("serving_frontends", "Front-end processes connected to the worker")
        connected.add_metric([], len(self._pool.link.connected))
        restarts = CounterMetricFamily(
            "serving_frontend_restarts", "Front-end processes restarted after they exited"
        )
        restarts.add_metric([], self._pool.restarts)
        requests = CounterMetricFamily(
            "serving_frontend_requests",
            "ModelInfer requests received through each front-end's slots",
            labels=["frontend", "pid"],
        )
        for facts in self._pool.link.connected:
            requests.add_metric([str(facts.index), str(facts.pid)], facts.requests)
        return [connected, restarts, requests]
