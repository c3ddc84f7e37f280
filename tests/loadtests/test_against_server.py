"""The load generator against the real server: closed and open loop, a sweep, a hot swap with zero
errors, an A/B split that matches its weights, and a cross-check with perf_analyzer.

The shared `live_server` serves the example repository and must not be changed; the hot swap and the
A/B test start their own servers on a copy of `digits`.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from loadtests.inputs import InputSpec
from loadtests.keys import parse_keys
from loadtests.plan import LoadShape, RunPlan, TargetSpec, Timing, prepare
from loadtests.runner import execute
from loadtests.scenario import load_scenario
from loadtests.slo import parse_slo
from loadtests.sweep import sweep
from tests.loadtests.conftest import run_once
from tests.servers import ServerProcess, start_server

PERF_ANALYZER = Path(sys.executable).parent / "perf_analyzer"


def digits_repository(root: Path, example_models: Path, versions: tuple[str, ...]) -> Path:
    """A model repository holding only `digits` with the given versions."""
    model = root / "digits"
    model.mkdir(parents=True)
    for name in ("config.pbtxt", "test_set.npz"):
        shutil.copy(example_models / "digits" / name, model / name)
    for version in versions:
        shutil.copytree(example_models / "digits" / version, model / version)
    return root


@pytest.fixture
def private_server(tmp_path: Path) -> Iterator[list[ServerProcess]]:
    """Servers a test starts itself; all are stopped at its end."""
    servers: list[ServerProcess] = []
    yield servers
    for server in servers:
        assert server.stop() == 0, server.log()[-3000:]


async def test_closed_loop(live_server: ServerProcess, example_models: Path) -> None:
    spec = TargetSpec("digits", LoadShape(concurrency=4), inputs=InputSpec(f"sample:{example_models}"))
    result = await run_once(
        live_server.grpc_address, [spec], duration_s=2.0, slo=parse_slo("p99<500ms,errors<=0")
    )
    total = result.targets[0].total()
    assert total.requests > 100 and total.failed == 0
    assert result.verdict().passed, result.verdict().line


async def test_open_loop_pinned_version_with_batches(
    live_server: ServerProcess, example_models: Path
) -> None:
    spec = TargetSpec(
        "digits",
        LoadShape(rate=100, poisson=True),
        version="1",
        batch=4,
        inputs=InputSpec(f"sample:{example_models}"),
    )
    result = await run_once(live_server.grpc_address, [spec], duration_s=2.0)
    target = result.targets[0]
    total = target.total()
    assert 200 - 4 * 200**0.5 < total.requests < 200 + 4 * 200**0.5
    assert total.failed == 0 and total.versions == {"1": total.ok}
    assert target.totals.lag.count == total.requests


async def test_sweep(live_server: ServerProcess) -> None:
    targets = await prepare(live_server.grpc_address, [TargetSpec("digits", LoadShape(concurrency=1))], 0)
    plan = RunPlan(live_server.grpc_address, targets, Timing(1.0, 0.3, 0.5))
    result = await sweep(plan, [1, 4], parse_slo("p99<2s,errors<=0"))
    assert [s.verdict.passed for s in result.steps] == [True, True]
    assert result.capacity is not None and result.capacity.level == 4
    one, four = (s.result.targets[0].observed().throughput for s in result.steps)
    assert four > one
    broken = await sweep(plan, [1, 4], parse_slo("p50<1us"))
    assert broken.capacity is None and len(broken.steps) == 1


async def test_hot_swap_scenario_has_zero_errors(
    tmp_path: Path, example_models: Path, private_server: list[ServerProcess]
) -> None:
    """Serve v1; at 2 s version 2 appears in the repository and is loaded; traffic moves without an error."""
    repository = digits_repository(tmp_path / "repo", example_models, ("1",))
    server = start_server(repository, tmp_path / "server.log")
    private_server.append(server)
    scenario = {
        "duration": "5s",
        "warmup": "0.5s",
        "interval": "0.5s",
        "window": "1s",
        "slo": "errors<=0,p99<1s",
        "targets": [{"model": "digits", "concurrency": 4, "inputs": f"sample:{repository}"}],
        "actions": [
            {
                "at": "1.5s",
                "type": "exec",
                "command": f"cp -r {example_models / 'digits' / '2'} {repository / 'digits'}/",
            },
            {"at": "2s", "type": "load", "model": "digits"},
        ],
    }
    path = tmp_path / "hot_swap.json"
    path.write_text(json.dumps(scenario))
    loaded = load_scenario(path).with_url(server.grpc_address)
    targets = await prepare(server.grpc_address, loaded.targets, 0)
    plan = RunPlan(server.grpc_address, targets, loaded.timing)
    result = await execute(plan, loaded.actions, slo=loaded.slo)
    assert [a.ok for a in result.actions] == [True, True], result.actions
    target = result.targets[0]
    total = target.total()
    assert total.failed == 0 and total.requests > 200, total.errors
    assert set(target.window(0.0, 1.5).versions) == {"1"}
    assert set(target.window(4.0, 5.0).versions) == {"2"}
    assert result.verdict().passed, result.verdict().line
    windows = result.to_json()["actions"][1]["windows"][0]
    assert windows["before"]["errors"] == {} and windows["after"]["errors"] == {}


async def test_ab_split_matches_the_weights(
    tmp_path: Path, example_models: Path, private_server: list[ServerProcess]
) -> None:
    repository = digits_repository(tmp_path / "repo", example_models, ("1", "2"))
    policy = {"format": 1, "weights": {"1": 70, "2": 30}, "sticky": True}
    (repository / "digits" / "traffic.json").write_text(json.dumps(policy))
    server = start_server(repository, tmp_path / "server.log")
    private_server.append(server)
    expected = {"1": 70.0, "2": 30.0}
    by_key = TargetSpec(
        "digits",
        LoadShape(concurrency=4),
        name="users",
        keys=parse_keys("zipf:10000:1.1"),
        expect_split=expected,
    )
    by_request = TargetSpec("digits", LoadShape(concurrency=2), name="anonymous", expect_split=expected)
    result = await run_once(server.grpc_address, [by_key, by_request], duration_s=3.0)
    users, anonymous = result.targets
    counts, moved = users.key_counts()
    assert moved == 0 and sum(counts.values()) > 300  # sticky: no key saw two versions
    for target in (users, anonymous):
        check = target.split_check()
        assert check is not None and check["matches"], check
    assert result.verdict().passed, result.verdict().line


@contextmanager
def cpus(pid: int, allowed: set[int]) -> Iterator[None]:
    """Pin every thread of a process to `allowed` for a while (pid 0: this thread, so children inherit it)."""
    tasks = [0] if pid == 0 else [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    before = {t: os.sched_getaffinity(t) for t in tasks}
    for task in tasks:
        os.sched_setaffinity(task, allowed)
    try:
        yield
    finally:
        for task, mask in before.items():
            try:
                os.sched_setaffinity(task, mask)
            except ProcessLookupError:
                pass


def perf_analyzer(address: str, concurrency: int, env: dict[str, str], out: Path) -> tuple[float, float]:
    """perf_analyzer's (throughput/s, p50 ms) at a fixed concurrency."""
    subprocess.run(
        [
            str(PERF_ANALYZER),
            "-m",
            "digits",
            "-u",
            address,
            "-i",
            "grpc",
            "--concurrency-range",
            str(concurrency),
            "-p",
            "2000",
            "-s",
            "50",
            "-f",
            str(out),
        ],
        check=True,
        capture_output=True,
        env=env,
        timeout=120,
    )
    (row,) = list(csv.DictReader(out.open()))
    return float(row["Inferences/Second"]), float(row["p50 latency"]) / 1000.0


async def ours(address: str, concurrency: int) -> tuple[float, float]:
    result = await run_once(
        address, [TargetSpec("digits", LoadShape(concurrency=concurrency))], 4.0, 1.0, 1.0
    )
    observed = result.targets[0].observed()
    return observed.throughput, observed.histogram.percentile(50) / 1e6


@pytest.mark.skipif(not PERF_ANALYZER.exists(), reason="perf_analyzer is not installed (tritonclient[grpc])")
async def test_throughput_and_p50_agree_with_perf_analyzer(
    live_server: ServerProcess, perf_analyzer_env: dict[str, str], tmp_path: Path
) -> None:
    """Same server, same concurrency: within 10%. Generator and server run on separate cores, as in any
    benchmark (on a 2-core machine the client would otherwise take CPU from the server); on a noisy
    shared machine one disagreeing round is measured again."""
    concurrency, rounds = 8, []
    split = len(os.sched_getaffinity(0)) >= 2
    server_cpus, client_cpus = ({0}, {1}) if split else (os.sched_getaffinity(0), os.sched_getaffinity(0))
    with cpus(live_server.process.pid, server_cpus), cpus(0, client_cpus):
        for attempt in range(2):
            theirs = perf_analyzer(
                live_server.grpc_address, concurrency, perf_analyzer_env, tmp_path / f"pa{attempt}.csv"
            )
            mine = await ours(live_server.grpc_address, concurrency)
            rounds.append((mine, theirs))
            if all(abs(m - t) <= 0.10 * t for m, t in zip(mine, theirs, strict=True)):
                return
    pytest.fail(f"(ours (throughput/s, p50 ms), perf_analyzer's) per round: {rounds}")
