"""`kill -9` under load and in the middle of policy writes, then a restart on the same repository.

A SIGKILL gives the server no chance to drain or to finish a write. What must hold afterwards: the
repository and the routing policy are intact (traffic.json parses and is a policy some acknowledged or
in-flight write put there, the history parses line by line), and the restarted server loads the same
versions and routes with the same split.

The add model's version N computes y = x + N, so every answer says which version computed it. The
writer alternates two splits that each send every unpinned request to one version, so "the same split"
is checked exactly: every answer after the restart comes from the version the file says.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import grpc
import pytest

from serving.proto import inference_pb2_grpc
from tests.lifecycle_client import Admin, Load, admin_address, infer
from tests.model_factory import write_add_repository
from tests.servers import start_server

pytestmark = pytest.mark.integration

MODEL = "add"
SPLITS = ({1: 100.0, 2: 0.0}, {1: 0.0, 2: 100.0})


def _writer(admin: Admin, stop: threading.Event, acknowledged: list[int]) -> None:
    """Alternate the two splits back to back; `acknowledged` gets the index of each split the server
    confirmed. Calls that break when the server dies end the loop."""
    for n in range(1_000_000):
        if stop.is_set():
            return
        try:
            admin.split(MODEL, SPLITS[n % 2])
        except grpc.RpcError:
            return
        acknowledged.append(n % 2)


def _on_disk_weights(repository: Path) -> dict[int, float]:
    policy = json.loads((repository / MODEL / "traffic.json").read_text())
    return {int(version): float(weight) for version, weight in policy["weights"].items()}


def test_kill9_during_policy_writes_under_load_then_restart(tmp_path: Path) -> None:
    repository = write_add_repository(tmp_path / "models", MODEL, versions=(1, 2))
    server = start_server(repository, tmp_path / "first.log")
    admin = Admin(admin_address(server.log(), server.grpc_address), server.grpc_address)
    load = Load(server.grpc_address, MODEL, threads=3).start()
    stop = threading.Event()
    acknowledged: list[int] = []
    writer = threading.Thread(target=_writer, args=(admin, stop, acknowledged), daemon=True)
    try:
        writer.start()
        deadline = time.monotonic() + 30
        while len(acknowledged) < 20 and time.monotonic() < deadline:  # writes are really under way
            time.sleep(0.05)
        assert len(acknowledged) >= 20, "the policy writer made no progress"
        server.process.kill()
        server.process.wait(10)
    finally:
        stop.set()
        writer.join(30)
        samples = load.stop()
        admin.close()
    served_before = [s for s in samples if s.version]
    assert len(served_before) >= 20, "the load was running when the server was killed"

    # The files: a whole policy that one of the writes put there, a history that parses line by line.
    weights = _on_disk_weights(repository)
    assert weights in [SPLITS[0], SPLITS[1]], weights
    last = SPLITS[acknowledged[-1]]
    in_flight = SPLITS[1 - acknowledged[-1]]
    assert weights in (last, in_flight), "the file holds the last acknowledged split or the one being written"
    for history in (repository / MODEL).glob("traffic.history*.jsonl"):
        lines = history.read_text().splitlines()
        # A crash may cut the line being appended; every complete line before it parses.
        complete = lines if history.read_text().endswith("\n") else lines[:-1]
        for line in complete:
            json.loads(line)

    restarted = start_server(repository, tmp_path / "second.log")
    try:
        admin = Admin(admin_address(restarted.log(), restarted.grpc_address), restarted.grpc_address)
        try:
            assert set(admin.versions(MODEL)) == {1, 2}, "the same versions are served after the restart"
            policy_weights = {int(v): w for v, w in admin.policy(MODEL).policy.weights.items()}
            assert policy_weights == weights, (policy_weights, weights)
        finally:
            admin.close()
        expected = next(version for version, weight in weights.items() if weight == 100.0)
        with grpc.insecure_channel(restarted.grpc_address) as channel:
            stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
            answered = {infer(stub, MODEL, float(i)) for i in range(50)}
        assert answered == {expected}, f"the split on disk sends everything to v{expected}; got {answered}"
        # And the restarted server takes writes again (no lock or temp file left in the way).
        admin = Admin(admin_address(restarted.log(), restarted.grpc_address), restarted.grpc_address)
        try:
            admin.split(MODEL, SPLITS[1 - SPLITS.index(weights)])
        finally:
            admin.close()
        assert _on_disk_weights(repository) == SPLITS[1 - SPLITS.index(weights)]
    finally:
        assert restarted.stop() == 0, restarted.log()[-3000:]
    print(f"{len(acknowledged)} policy writes acknowledged, {len(served_before)} requests served before the kill")
