"""Progressive rollouts through the real server: tritonclient load, `serving ctl rollout`, short steps.

The add model's version N adds its addend to x; a healthy candidate adds the same as the baseline, a wrong
one adds another number, so its predictions drift from the baseline's and the judge rolls it back.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tests.model_factory import add_model_config, write_add_model
from tests.servers import ROOT, ServerProcess, start_server

pytestmark = pytest.mark.integration

FAST = ["--step-time", "1s", "--min-requests", "40", "--steps", "20,50"]


def repository(root: Path, addends: dict[int, float]) -> Path:
    folder = root / "m"
    folder.mkdir(parents=True)
    (folder / "config.pbtxt").write_text(add_model_config("m"))
    for version, addend in addends.items():
        write_add_model(folder / str(version) / "model.onnx", 4, addend)
    return root


def ctl(server: ServerProcess, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "serving", "ctl", "--url", server.grpc_address, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert not check or result.returncode == 0, result.stderr
    return result


def status(server: ServerProcess) -> dict[str, object]:
    data: dict[str, object] = json.loads(ctl(server, "rollout", "m", "--status", "--json").stdout)
    return data


def wait_for_phase(server: ServerProcess, phases: set[str], timeout: float = 60.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        current = status(server)
        if current["phase"] in phases:
            return current
        assert time.monotonic() < deadline, f"rollout still {current}; log:\n{server.log()[-3000:]}"
        time.sleep(0.3)


@contextmanager
def load(server: ServerProcess, threads: int = 3) -> Iterator[Callable[[], list[str]]]:
    """Clients sending random x (numpy seeded) until the block ends; yields a function giving failures."""
    stop, failures = threading.Event(), []

    def client(seed: int) -> None:
        rng = np.random.default_rng(seed)
        triton = grpcclient.InferenceServerClient(server.grpc_address)
        while not stop.is_set():
            x = rng.uniform(-4, 4, size=(1, 4)).astype(np.float32)
            tensor = grpcclient.InferInput("x", [1, 4], "FP32")
            tensor.set_data_from_numpy(x)
            try:
                triton.infer("m", [tensor])
            except Exception as exc:  # every failure is reported by the test
                failures.append(str(exc))
        triton.close()

    workers = [threading.Thread(target=client, args=(seed,), daemon=True) for seed in range(threads)]
    for worker in workers:
        worker.start()
    try:
        yield lambda: list(failures)
    finally:
        stop.set()
        for worker in workers:
            worker.join(10)


@pytest.fixture
def two_healthy_one_wrong(tmp_path: Path) -> Iterator[ServerProcess]:
    repo = repository(tmp_path / "repo", {1: 1.0, 2: 1.0, 3: 3.0})
    server = start_server(repo, tmp_path / "server.log")
    ctl(server, "promote", "m", "1")
    yield server
    assert server.stop() == 0, server.log()[-3000:]


def history(server: ServerProcess) -> list[dict[str, object]]:
    entries: list[dict[str, object]] = json.loads(ctl(server, "history", "m", "--json").stdout)
    return entries


def test_a_healthy_candidate_is_promoted_with_evidence_in_history(
    two_healthy_one_wrong: ServerProcess,
) -> None:
    server = two_healthy_one_wrong
    with load(server) as failures:
        started = json.loads(ctl(server, "rollout", "m", "--to", "2", *FAST, "--json").stdout)
        assert started["phase"] == "canary" and started["candidate_percent"] == 20
        final = wait_for_phase(server, {"promoted", "rolled_back"})
        assert failures() == []
    assert final["phase"] == "promoted", (final["reason"], final["gates"], history(server)[-3:])
    assert final["candidate_percent"] == 100
    actions = [e["action"] for e in history(server)]
    assert actions[-3:] == ["rollout", "rollout-advance", "rollout-promote"]
    promote = history(server)[-1]
    evidence = promote["evidence"]
    assert isinstance(evidence, dict)
    verdicts = {g["gate"]: g["verdict"] for g in evidence["gates"]}
    assert verdicts["errors"] == "pass" and verdicts["drift"] == "pass"
    assert "every gate passed" in str(promote["reason"])
    metrics = _scrape(server)
    assert 'serving_rollout_phase{model="m",phase="promoted"} 1.0' in metrics
    assert 'serving_rollout_decisions_total{decision="promote",model="m"} 1.0' in metrics


def test_a_wrong_candidate_is_rolled_back_on_drift(two_healthy_one_wrong: ServerProcess) -> None:
    server = two_healthy_one_wrong
    with load(server) as failures:
        ctl(server, "rollout", "m", "--to", "3", *FAST)
        final = wait_for_phase(server, {"promoted", "rolled_back"})
        assert failures() == []
    assert final["phase"] == "rolled_back" and final["failed_gate"] == "drift", final
    assert final["candidate_percent"] == 0
    last = history(server)[-1]
    assert last["action"] == "rollout-rollback" and "drift" in str(last["reason"])
    assert ctl(server, "policy", "m").stdout.startswith("m: 1=100 rollout=rolled_back")
    assert 'serving_rollout_gate_passing{gate="drift",model="m"} 0.0' in _scrape(server)


def _scrape(server: ServerProcess) -> str:
    import urllib.request

    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        text: str = response.read().decode()
    return text
