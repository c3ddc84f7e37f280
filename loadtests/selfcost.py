"""The generator's own ceiling: drive the no-op server (in its own process) as hard as possible.

What it reports: the throughput reached against a server that does nothing, and the generator's CPU
time per request. On a machine where the no-op server has a core to itself, the throughput is the
generator's ceiling; CPU per request is the cost independent of that (1e6 / µs = requests per
second one busy worker core can drive).
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from loadtests.plan import LoadShape, RunPlan, TargetSpec, Timing, prepare
from loadtests.results import RunResult
from loadtests.runner import Progress, execute

PACKAGE_PARENT = str(Path(__file__).resolve().parent.parent)
_LISTENING = re.compile(r"listening on (\S+)")


async def _start_noop(port: int, extra_args: Sequence[str]) -> tuple[asyncio.subprocess.Process, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (PACKAGE_PARENT, env.get("PYTHONPATH", "")) if p)
    args = ["-m", "loadtests", "noop-server", "--host", "127.0.0.1", "--port", str(port), *extra_args]
    process = await asyncio.create_subprocess_exec(
        sys.executable, *args, stdout=asyncio.subprocess.PIPE, env=env
    )
    assert process.stdout is not None
    line = (await asyncio.wait_for(process.stdout.readline(), 30.0)).decode()
    match = _LISTENING.search(line)
    if not match:
        process.terminate()
        await process.wait()
        raise RuntimeError(f"no-op server did not start: {line.strip()!r}")
    return process, match.group(1)


@asynccontextmanager
async def noop_server_process(extra_args: Sequence[str] = (), processes: int = 1) -> AsyncIterator[str]:
    """Start ``python -m loadtests noop-server`` on a free loopback port; yield its address.

    With ``processes`` > 1 the others bind the same port (gRPC sets SO_REUSEPORT), and the kernel
    spreads connections over them, so the no-op side scales with cores like the generator does.
    """
    started: list[asyncio.subprocess.Process] = []
    try:
        first, address = await _start_noop(0, extra_args)
        started.append(first)
        port = int(address.rsplit(":", 1)[1])
        for _ in range(processes - 1):
            started.append((await _start_noop(port, extra_args))[0])
        yield address
    finally:
        for process in started:
            if process.returncode is None:
                process.terminate()
                await process.wait()


async def measure_self_cost(
    workers: int,
    concurrency: int,
    duration_s: float,
    connections: int = 1,
    progress: Progress | None = None,
    server_processes: int = 1,
) -> RunResult:
    async with noop_server_process(processes=server_processes) as url:
        spec = TargetSpec("noop", LoadShape(concurrency=concurrency), name="noop-server")
        targets = await prepare(url, [spec], seed=0)
        plan = RunPlan(
            url, targets, Timing(duration_s, warmup_s=1.0), workers=workers, connections=connections
        )
        return await execute(plan, progress=progress)


def self_cost_line(result: RunResult) -> str:
    target = result.targets[0]
    total = target.total()
    cost = result.generator.per_request_us(total.requests)
    per_core = f"≈{1e6 / cost:,.0f}/s per busy worker core" if cost else "-"
    return (
        f"generator vs no-op server: {total.ok / target.span_s:,.0f} req/s "
        f"with {result.generator.workers} worker(s), "
        f"{target.spec.load.describe()}; generator CPU {cost} µs/request ({per_core}); "
        f"p50 {target.observed().histogram.percentile(50) / 1e6:.2f}ms"
    )
