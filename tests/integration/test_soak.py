"""Soak: steady load with hot swaps, and memory, file descriptors, threads and event-loop tasks stay flat.

SERVING_SOAK_SECONDS (default 120: CI's bounded run; set it higher for a long soak) of closed-loop load
from 4 client threads on an add model with two versions, a hot swap (the version's file rewritten, then
RepositoryModelLoad) every SWAP_EVERY_S seconds alternating between the versions, and a sample every
SAMPLE_EVERY_S seconds of the server's RSS and open fds (/proc), Python threads and asyncio tasks
(/metrics). The first WARMUP_S seconds are not judged (allocator pools, gRPC's connection state and
lazily-built caches fill then). After it, the later half of the samples is compared with the earlier
half: anything started per request, per swap or per connection and never released would climb.
Every request must succeed; the figures are printed and recorded in docs/reliability.md.
"""

from __future__ import annotations

import os
import re
import statistics
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lifecycle_client import Admin, Load, admin_address
from tests.model_factory import write_add_model, write_add_repository
from tests.servers import ServerProcess, serving

pytestmark = pytest.mark.integration

MODEL = "add"
SECONDS = float(os.environ.get("SERVING_SOAK_SECONDS", "120"))
WARMUP_S = min(30.0, SECONDS / 4)
SWAP_EVERY_S = 5.0
SAMPLE_EVERY_S = 2.0
RSS_GROWTH = 0.05  # later half's median RSS within 5% of the earlier half's
COUNT_SLACK = {"fds": 4, "threads": 2, "tasks": 8}  # whole-number gauges: later max - earlier max


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    repository = write_add_repository(tmp_path / "models", MODEL, versions=(1, 2))
    yield from serving(repository, tmp_path / "server.log")


def _sample(server: ServerProcess) -> dict[str, float]:
    pid = server.process.pid
    status = Path(f"/proc/{pid}/status").read_text()
    rss = re.search(r"VmRSS:\s+(\d+) kB", status)
    assert rss is not None
    with urllib.request.urlopen(server.metrics_url, timeout=10) as reply:
        text = reply.read().decode()
    gauges = {
        name: float(match.group(1))
        for name in ("serving_event_loop_tasks", "serving_python_threads")
        if (match := re.search(rf"^{name} (\S+)$", text, re.MULTILINE))
    }
    assert len(gauges) == 2, "the runtime gauges are exported"
    return {
        "rss_mb": int(rss.group(1)) / 1024,
        "fds": float(len(os.listdir(f"/proc/{pid}/fd"))),
        "threads": gauges["serving_python_threads"],
        "tasks": gauges["serving_event_loop_tasks"],
        "native_threads": float(len(os.listdir(f"/proc/{pid}/task"))),
    }


def test_soak_with_hot_swaps_stays_flat(server: ServerProcess, tmp_path: Path) -> None:
    folder = tmp_path / "models" / MODEL
    admin = Admin(admin_address(server.log(), server.grpc_address), server.grpc_address)
    load = Load(server.grpc_address, MODEL, threads=4).start()
    samples: list[tuple[float, dict[str, float]]] = []
    swaps = 0
    started = time.monotonic()
    next_swap = started + SWAP_EVERY_S
    try:
        while (now := time.monotonic()) - started < SECONDS:
            if now >= next_swap:
                version = 1 + swaps % 2
                write_add_model(folder / str(version) / "model.onnx", 4, float(version))  # same addend
                admin.load(MODEL)
                swaps += 1
                next_swap += SWAP_EVERY_S
            samples.append((now - started, _sample(server)))
            time.sleep(SAMPLE_EVERY_S)
    finally:
        results = load.stop()
        admin.close()
    failed = [s for s in results if not s.version]
    assert not failed, f"{len(failed)} of {len(results)} requests failed, e.g. {failed[:3]}"

    judged = [values for at, values in samples if at >= WARMUP_S]
    assert len(judged) >= 6, f"only {len(judged)} samples after the warm-up"
    earlier, later = judged[: len(judged) // 2], judged[len(judged) // 2 :]
    report = {key: (judged[0][key], judged[-1][key], max(v[key] for v in judged)) for key in judged[0]}
    print(
        f"soak {SECONDS:.0f} s: {len(results)} requests, 0 failed, {swaps} hot swaps; first/last/max after "
        f"the {WARMUP_S:.0f} s warm-up: "
        + ", ".join(f"{key} {a:.1f}/{b:.1f}/{c:.1f}" for key, (a, b, c) in report.items())
    )
    rss_before = statistics.median(v["rss_mb"] for v in earlier)
    rss_after = statistics.median(v["rss_mb"] for v in later)
    assert rss_after <= rss_before * (1 + RSS_GROWTH), (
        f"RSS climbs: median {rss_before:.1f} -> {rss_after:.1f} MB"
    )
    for key, slack in COUNT_SLACK.items():
        before, after = max(v[key] for v in earlier), max(v[key] for v in later)
        assert after <= before + slack, (
            f"{key} climbs: max {before:.0f} in the earlier half, {after:.0f} later"
        )
    assert swaps >= SECONDS / SWAP_EVERY_S - 2, "the hot swaps ran"
