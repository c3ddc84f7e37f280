"""Fixtures for the load generator's tests: in-process no-op servers and a one-call run helper."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import pytest

from loadtests.actions import Action
from loadtests.noop_server import NoopConfig, NoopServicer, start_noop_server
from loadtests.plan import RunPlan, TargetSpec, Timing, prepare
from loadtests.results import RunResult
from loadtests.runner import execute
from loadtests.slo import Slo

NoopFactory = Callable[[NoopConfig | None], Awaitable[tuple[str, NoopServicer]]]


@pytest.fixture
async def noop() -> AsyncIterator[NoopFactory]:
    """Start no-op servers on loopback (port 0) in the test's loop; all stop when the test ends."""
    servers = []

    async def start(config: NoopConfig | None = None) -> tuple[str, NoopServicer]:
        server, port, servicer = await start_noop_server(config or NoopConfig())
        servers.append(server)
        return f"127.0.0.1:{port}", servicer

    yield start
    for server in servers:
        await server.stop(0)


async def run_once(
    url: str,
    specs: Sequence[TargetSpec],
    duration_s: float = 1.5,
    warmup_s: float = 0.3,
    interval_s: float = 0.5,
    workers: int = 1,
    actions: Sequence[Action] = (),
    slo: Slo | None = None,
) -> RunResult:
    targets = await prepare(url, specs, seed=0)
    plan = RunPlan(url, targets, Timing(duration_s, warmup_s, interval_s), workers=workers)
    return await execute(plan, actions, slo=slo)
