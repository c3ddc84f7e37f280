"""Three replicas that agree: what a Kubernetes Deployment of this server relies on, tested on loopback.

Three server processes share one model repository in poll mode (as pods share a ReadWriteMany volume);
a tritonclient gRPC client balances with `round_robin` over the three addresses (what a headless Service
gives a client) and retries UNAVAILABLE through the service config's retry policy.

- load spreads across the replicas (each one's ModelStatistics counts its share);
- a split written through one replica's admin API is in force on all three within the poll interval,
  and a sticky routing key gets the same version from every replica;
- a replica SIGKILLed under load: the client's retries go to the others and every request is answered.

The add model's version N computes y = x + N, so every answer says which version computed it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.lifecycle_client import Admin, admin_address
from tests.model_factory import write_add_repository
from tests.servers import ServerProcess, start_server

pytestmark = pytest.mark.integration

MODEL = "add"
POLL_SECS = 1.0
REPLICAS = 3
# What a client of the headless Service configures: round_robin over every address, and retries of
# UNAVAILABLE (a replica going away) on the other replicas. Inference on the add model is idempotent.
SERVICE_CONFIG = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [
        {
            "name": [{"service": "inference.GRPCInferenceService"}],
            "retryPolicy": {
                "maxAttempts": 5,
                "initialBackoff": "0.05s",
                "maxBackoff": "0.5s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ],
}


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[list[ServerProcess]]:
    repository = write_add_repository(tmp_path / "models", MODEL, versions=(1, 2))
    flags = ("--model-control-mode", "poll", "--repository-poll-secs", str(POLL_SECS))
    logs = [tmp_path / f"replica{n}.log" for n in range(REPLICAS)]
    with ThreadPoolExecutor(REPLICAS) as pool:
        futures = [pool.submit(start_server, repository, log, *flags) for log in logs]
        started = [future.result() for future in futures]
    try:
        yield started
    finally:
        for server in started:
            server.stop()


def balanced_client(servers: list[ServerProcess]) -> grpcclient.InferenceServerClient:
    target = "ipv4:" + ",".join(server.grpc_address for server in servers)
    options = [
        ("grpc.service_config", json.dumps(SERVICE_CONFIG)),
        ("grpc.enable_retries", 1),
        ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ]
    return grpcclient.InferenceServerClient(target, channel_args=options)


def infer(client: grpcclient.InferenceServerClient, value: float, key: str = "") -> int:
    """One request; returns the version that answered, checked against the output (y = x + version)."""
    x = np.full((1, 4), value, np.float32)
    tensor = grpcclient.InferInput("x", [1, 4], "FP32")
    tensor.set_data_from_numpy(x)
    headers = {"x-routing-key": key} if key else None
    result = client.infer(MODEL, [tensor], headers=headers, client_timeout=30)
    version = int(result.get_response().model_version)
    np.testing.assert_allclose(result.as_numpy("y"), x + version)
    return version


def served(server: ServerProcess) -> int:
    """Successful inferences this replica counted, all versions of the model together."""
    client = grpcclient.InferenceServerClient(server.grpc_address)
    try:
        stats = client.get_inference_statistics(MODEL, as_json=True)
    finally:
        client.close()
    return sum(int(s["inference_stats"]["success"].get("count", 0)) for s in stats["model_stats"])


def admin(server: ServerProcess) -> Admin:
    return Admin(admin_address(server.log(), server.grpc_address), server.grpc_address)


def test_round_robin_spreads_load_over_the_replicas(replicas: list[ServerProcess]) -> None:
    client = balanced_client(replicas)
    try:
        versions = [infer(client, float(i)) for i in range(90)]
    finally:
        client.close()
    assert set(versions) == {2}, "no policy: the highest version answers on every replica"
    counts = [served(server) for server in replicas]
    assert sum(counts) == 90
    assert min(counts) >= 15, f"round_robin should spread 90 requests over 3 replicas, got {counts}"


def test_a_split_set_on_one_replica_reaches_all_and_sticky_keys_agree(replicas: list[ServerProcess]) -> None:
    operators = [admin(server) for server in replicas]
    try:
        written = operators[0].split(MODEL, {1: 50, 2: 50}, sticky=True)
        changed = time.monotonic()
        pending = set(range(REPLICAS))
        while pending and time.monotonic() - changed < 3 * POLL_SECS + 5:
            pending -= {n for n in pending if operators[n].policy(MODEL).policy == written}
            time.sleep(0.05)
        elapsed = time.monotonic() - changed
        assert not pending, f"replicas {sorted(pending)} still lack the split after {elapsed:.1f}s"
        # One poll to see the new file, one to confirm it; loaded CI machines get a second's slack.
        assert elapsed <= 2 * POLL_SECS + 1.0, f"the split took {elapsed:.2f}s to reach every replica"
        print(f"split in force on all {REPLICAS} replicas {elapsed:.2f}s after the admin call returned")
        for operator in operators:
            assert operator.policy(MODEL).error == ""
    finally:
        for operator in operators:
            operator.close()

    keys = [f"user-{n}" for n in range(24)]
    answers: dict[str, set[int]] = {key: set() for key in keys}
    for server in replicas:
        client = grpcclient.InferenceServerClient(server.grpc_address)
        try:
            for key in keys:
                answers[key] |= {infer(client, 1.0, key) for _ in range(2)}
        finally:
            client.close()
    assert all(len(versions) == 1 for versions in answers.values()), answers
    assert {next(iter(v)) for v in answers.values()} == {1, 2}, "both versions of the split get keys"


def test_a_replica_killed_under_load_loses_no_request(replicas: list[ServerProcess]) -> None:
    client = balanced_client(replicas)
    survivors, victim = replicas[:2], replicas[2]
    before = sum(served(server) for server in survivors)
    results: list[tuple[float, int | str]] = []  # (started, version or error)
    lock = threading.Lock()
    stop = threading.Event()

    def send(worker: int) -> None:
        for i in range(100_000):
            if stop.is_set():
                return
            started = time.monotonic()
            try:
                outcome: int | str = infer(client, float(worker * 1000 + i % 1000))
            except (InferenceServerException, AssertionError) as exc:
                outcome = str(exc)
            with lock:
                results.append((started, outcome))

    workers = [threading.Thread(target=send, args=(n,), daemon=True) for n in range(4)]
    try:
        for worker in workers:
            worker.start()
        time.sleep(1.5)
        killed_at = time.monotonic()
        victim.process.kill()  # SIGKILL: no drain, in-flight calls on it break
        victim.process.wait(10)
        time.sleep(2.0)
        stop.set()
        for worker in workers:
            worker.join(60)
    finally:
        stop.set()
        client.close()

    failures = [outcome for _, outcome in results if isinstance(outcome, str)]
    assert not failures, f"{len(failures)} of {len(results)} requests failed, e.g. {failures[:3]}"
    after_kill = [started for started, _ in results if started > killed_at]
    before_kill = len(results) - len(after_kill)
    assert before_kill >= 20 and len(after_kill) >= 20, (before_kill, len(after_kill))
    survivors_served = sum(served(server) for server in survivors) - before
    assert survivors_served >= len(after_kill), "requests sent after the kill were served by the survivors"
    print(f"{len(results)} requests, {len(after_kill)} after the kill, 0 failed")
