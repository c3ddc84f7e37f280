"""Model lifecycle under real load: hot swaps, splits, promotions and rollbacks never fail a request.

One server on a tmp repository of add models (version N computes y = x + N, so every output says which
version answered). Each test works on its own model, so the tests do not depend on one another.
"""

from __future__ import annotations

import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
from scipy.stats import chisquare

from serving.api.codec import build_infer_request
from serving.proto import admin_pb2 as apb
from serving.proto import inference_pb2 as ipb
from serving.proto import inference_pb2_grpc
from tests.lifecycle_client import Admin, Load, Sample, admin_address, infer, routable, write_reshape_model
from tests.model_factory import add_model_config, write_add_model, write_add_repository
from tests.servers import ServerProcess, start_server

pytestmark = pytest.mark.integration

ALL = "version_policy: { all {} }"
SLOW_BATCHING = """
dynamic_batching {
  preferred_batch_size: [ 8 ]
  max_queue_delay_microseconds: 5000000
}
parameters { key: "batching.strict_delay" value: { string_value: "true" } }
"""


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lifecycle")
    write_add_repository(root, "swap", versions=(1, 2, 3))
    write_add_repository(root, "split", versions=(1, 2, 3))
    write_add_repository(root, "sticky", versions=(1, 2))
    write_add_repository(root, "canary", versions=(1,))
    write_add_repository(
        root, "slow", versions=(1, 2), config=add_model_config("slow", batching=SLOW_BATCHING)
    )
    write_add_repository(root, "shadowed", versions=(1, 3))
    write_reshape_model(root / "shadowed" / "2" / "model.onnx", 2.0)
    return root


@pytest.fixture(scope="module")
def server(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = start_server(repo, tmp_path_factory.mktemp("lifecycle-log") / "server.log")
    yield process
    assert process.stop() == 0, process.log()[-3000:]


@pytest.fixture(scope="module")
def admin(server: ServerProcess) -> Iterator[Admin]:
    client = Admin(admin_address(server.log(), server.grpc_address), server.grpc_address)
    yield client
    client.close()


@pytest.fixture(scope="module")
def stub(server: ServerProcess) -> Iterator[inference_pb2_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(server.grpc_address) as channel:
        yield inference_pb2_grpc.GRPCInferenceServiceStub(channel)


def set_versions(folder: Path, versions: str) -> None:
    config = folder / "config.pbtxt"
    text = config.read_text()
    start = text.index("version_policy:")
    end = text.index("\n", start)
    config.write_text(text[:start] + versions + text[end:])


# ---- sustained load: ≥ 20 operator actions, zero failed requests -----------------------------------


def _operator_actions(admin: Admin, folder: Path) -> list[tuple[str, object]]:
    """25 actions: splits, shadows, promotions, rollbacks, hot swaps, a version removed and restored."""

    def swap(version: int) -> None:
        write_add_model(folder / str(version) / "model.onnx", 4, float(version))  # new file, same addend
        admin.load("swap")

    def versions(policy: str) -> None:
        set_versions(folder, policy)
        admin.load("swap")

    return [
        ("split 1=90 2=10", lambda: admin.split("swap", {1: 90, 2: 10})),
        ("split 1=50 2=50 sticky", lambda: admin.split("swap", {1: 50, 2: 50}, sticky=True)),
        ("shadow 3", lambda: admin.shadow("swap", 3, 0.3)),
        ("promote 2", lambda: admin.promote("swap", 2)),
        ("rollback", lambda: admin.rollback("swap")),
        ("hot swap v1", lambda: swap(1)),
        ("split 1=20 2=30 3=50", lambda: admin.split("swap", {1: 20, 2: 30, 3: 50})),
        ("remove v3", lambda: versions("version_policy: { specific { versions: [1, 2] } }")),
        ("restore v3", lambda: versions(ALL)),
        ("promote 3", lambda: admin.promote("swap", 3)),
        ("rollback", lambda: admin.rollback("swap")),
        ("rollback", lambda: admin.rollback("swap")),
        ("hot swap v2", lambda: swap(2)),
        ("clear shadow", lambda: admin.clear_shadow("swap")),
        ("split 2=1 3=1", lambda: admin.split("swap", {1: 0, 2: 1, 3: 1})),
        ("hot swap v3", lambda: swap(3)),
        ("promote 1", lambda: admin.promote("swap", 1)),
        ("rollback", lambda: admin.rollback("swap")),
        ("clear policy", lambda: admin.clear("swap")),
        ("rollback", lambda: admin.rollback("swap")),
        ("split 1=1 2=1 3=1 not sticky", lambda: admin.split("swap", {1: 1, 2: 1, 3: 1}, sticky=False)),
        ("remove v3", lambda: versions("version_policy: { specific { versions: [1, 2] } }")),
        ("restore v3", lambda: versions(ALL)),
        ("promote 2", lambda: admin.promote("swap", 2)),
        ("rollback", lambda: admin.rollback("swap")),
    ]


def _check_routable(samples: list[Sample], timeline: list[tuple[float, float, set[int]]]) -> None:
    """Each answer came from a version routable while its request was in flight: policy k holds from
    the start of the call that set it until the end of the call that replaced it."""
    for sample in samples:
        allowed: set[int] = set()
        for k, (started, _ended, versions) in enumerate(timeline):
            until = timeline[k + 1][1] if k + 1 < len(timeline) else float("inf")
            if started <= sample.ended and sample.started <= until:
                allowed |= versions
        assert sample.version in allowed, f"v{sample.version} answered, routable: {sorted(allowed)}; {sample}"


def test_sustained_load_through_swaps_splits_promotions_and_rollbacks(
    server: ServerProcess, admin: Admin, repo: Path
) -> None:
    keys = [f"user-{i}" for i in range(50)]
    load = Load(server.grpc_address, "swap", threads=6, keys=keys).start()
    timeline: list[tuple[float, float, set[int]]] = [(-1.0, -1.0, {3})]  # no policy: the highest serves
    loaded = {1, 2, 3}
    try:
        time.sleep(0.5)
        for name, action in _operator_actions(admin, repo / "swap"):
            started = time.monotonic()
            action()
            loaded = {1, 2} if name == "remove v3" else {1, 2, 3}
            reply = admin.policy("swap")
            assert not reply.error, reply.error
            timeline.append((started, time.monotonic(), routable(reply.policy, loaded)))
            time.sleep(0.3)
    finally:
        samples = load.stop()
    failed = [s for s in samples if s.error]
    assert not failed, f"{len(failed)} of {len(samples)} requests failed, e.g. {failed[:3]}"
    assert len(samples) >= 1000, f"only {len(samples)} requests: not a sustained load"
    _check_routable(samples, timeline)
    assert {s.version for s in samples} == {1, 2, 3}
    states = {v: s.state for v, s in admin.versions("swap").items()}
    assert states == {1: "READY", 2: "READY", 3: "READY"}, states
    assert "Traceback" not in server.log()


# ---- weighted split and sticky keys -------------------------------------------------------------------


def test_observed_split_matches_the_weights(server: ServerProcess, admin: Admin) -> None:
    weights = {1: 60.0, 2: 30.0, 3: 10.0}
    admin.split("split", weights, sticky=False)
    total = 10_000

    def run(worker: int) -> Counter[int]:
        counts: Counter[int] = Counter()
        with grpc.insecure_channel(server.grpc_address) as channel:
            stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
            request = build_infer_request("split", {"x": np.zeros((1, 4), np.float32)})
            for _ in range(total // 8):
                counts[int(stub.ModelInfer(request, timeout=30).model_version)] += 1
        return counts

    with ThreadPoolExecutor(8) as pool:
        observed = sum(pool.map(run, range(8)), Counter())
    assert sum(observed.values()) == total
    expected = [total * w / sum(weights.values()) for w in weights.values()]
    result = chisquare([observed[v] for v in weights], expected)
    assert result.pvalue > 0.001, f"observed {dict(observed)}, expected {expected}: p={result.pvalue}"


def _key_versions(stub: inference_pb2_grpc.GRPCInferenceServiceStub, keys: list[str]) -> dict[str, int]:
    """Each key's version, asked three times (parameter, metadata, parameter): it must never differ."""
    seen: dict[str, int] = {}
    for key in keys:
        answers = {
            infer(stub, "sticky", key=key),
            infer(stub, "sticky", key=key, key_in_metadata=True),
            infer(stub, "sticky", key=key),
        }
        assert len(answers) == 1, f"key {key} went to versions {answers} under one policy"
        seen[key] = answers.pop()
    return seen


def test_sticky_keys_stay_and_only_move_to_a_growing_version(
    admin: Admin, stub: inference_pb2_grpc.GRPCInferenceServiceStub
) -> None:
    keys = [f"customer-{i}" for i in range(300)]
    admin.split("sticky", {1: 80, 2: 20}, sticky=True)
    before = _key_versions(stub, keys)
    assert set(before.values()) == {1, 2}
    admin.split("sticky", {1: 50, 2: 50})  # stickiness kept
    after = _key_versions(stub, keys)
    moved_back = [k for k in keys if before[k] == 2 and after[k] == 1]
    assert not moved_back, f"keys moved from v2 to v1 when v2's weight grew: {moved_back[:5]}"
    assert any(before[k] == 1 and after[k] == 2 for k in keys), "no key moved to the grown version"
    assert _key_versions(stub, keys) == after  # still unchanged while the policy is


def test_pinned_versions(stub: inference_pb2_grpc.GRPCInferenceServiceStub, admin: Admin) -> None:
    admin.split("sticky", {1: 100})
    assert infer(stub, "sticky", version="2") == 2  # pinning ignores the policy
    with pytest.raises(grpc.RpcError) as info:
        infer(stub, "sticky", version="7")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


# ---- failures: a corrupt version, a bad config, shadows -----------------------------------------------


def test_corrupt_new_version_leaves_the_old_one_serving(
    server: ServerProcess, admin: Admin, repo: Path, stub: inference_pb2_grpc.GRPCInferenceServiceStub
) -> None:
    (repo / "canary" / "2").mkdir()
    (repo / "canary" / "2" / "model.onnx").write_bytes(b"\x08\x07 truncated onnx")
    load = Load(server.grpc_address, "canary", threads=2).start()
    try:
        time.sleep(0.3)
        with pytest.raises(grpc.RpcError) as info:
            admin.load("canary")
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "version 2" in info.value.details()
        config = repo / "canary" / "config.pbtxt"
        good = config.read_text()
        config.write_text(good.replace("dims: [ 4 ]", "dims: [ 0 ]"))  # a bad config: old ones serve on
        with pytest.raises(grpc.RpcError) as info:
            admin.load("canary")
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        config.write_text(good)
        time.sleep(0.3)
    finally:
        samples = load.stop()
    assert samples and not [s for s in samples if s.error]
    assert {s.version for s in samples} == {1}
    versions = admin.versions("canary")
    assert versions[1].state == "READY"
    assert versions[2].state == "FAILED" and "model.onnx" in versions[2].reason
    index = stub.RepositoryIndex(ipb.RepositoryIndexRequest(), timeout=10)
    entry = next(m for m in index.models if m.name == "canary" and m.version == "2")
    assert entry.state == "FAILED" and entry.reason
    with pytest.raises(grpc.RpcError) as info:
        infer(stub, "canary", version="2")
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(grpc.RpcError) as info:
        admin.promote("canary", 2)  # a version that is not READY cannot take all the traffic
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "canary v2: FAILED" in server.log()
    metrics = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
    failed = [
        m
        for m in metrics.splitlines()
        if m.startswith("serving_model_version_state{") and 'state="FAILED"' in m
    ]
    assert any('model="canary"' in m and 'version="2"' in m and m.endswith(" 1.0") for m in failed), failed


def _queue(stub: inference_pb2_grpc.GRPCInferenceServiceStub, count: int, version: str) -> list[grpc.Future]:
    request = build_infer_request("slow", {"x": np.zeros((1, 4), np.float32)}, model_version=version)
    return [stub.ModelInfer.future(request, timeout=60) for _ in range(count)]


def _wait_queued(admin: Admin, version: int, count: int) -> None:
    deadline = time.monotonic() + 10
    while admin.versions("slow")[version].queue_depth < count:
        assert time.monotonic() < deadline, "requests did not reach the queue"
        time.sleep(0.05)


def test_unloading_a_version_with_queued_requests_completes_them(
    admin: Admin, repo: Path, stub: inference_pb2_grpc.GRPCInferenceServiceStub
) -> None:
    # The batcher holds requests up to 5 s for a batch of 8: these 6 stay queued until a drain.
    queued = _queue(stub, 6, "1")
    _wait_queued(admin, 1, 6)
    set_versions(repo / "slow", "version_policy: { specific { versions: [2] } }")
    admin.load("slow")  # v1 leaves the policy: removed from routing, drained, unloaded
    assert [int(f.result().model_version) for f in queued] == [1] * 6
    index = {
        m.version: m.state
        for m in stub.RepositoryIndex(ipb.RepositoryIndexRequest()).models
        if m.name == "slow"
    }
    assert index == {"1": "UNLOADED", "2": "READY"}
    queued = _queue(stub, 5, "")
    _wait_queued(admin, 2, 5)
    admin.unload("slow")
    assert [int(f.result().model_version) for f in queued] == [2] * 5


def test_shadow_failures_never_reach_the_client(
    server: ServerProcess, admin: Admin, stub: inference_pb2_grpc.GRPCInferenceServiceStub
) -> None:
    admin.split("shadowed", {1: 100})
    admin.shadow("shadowed", 2, 1.0)  # v2 fails every request of 2 rows
    load = Load(server.grpc_address, "shadowed", threads=3, rows=2).start()
    deadline = time.monotonic() + 30
    # Run the load until the shadow has failed a few times and clients have seen plenty of replies.
    while (
        admin.shadow_stats("shadowed").get((1, 2), apb.ShadowPairStats()).failed < 5 or len(load.samples) < 30
    ):
        assert time.monotonic() < deadline, (admin.shadow_stats("shadowed"), len(load.samples))
        time.sleep(0.05)
    samples = load.stop()
    assert samples and not [s for s in samples if s.error]
    assert {s.version for s in samples} == {1}
    pair = admin.shadow_stats("shadowed")[(1, 2)]
    assert pair.failed > 0 and pair.compared == 0
    admin.shadow("shadowed", 3, 1.0)  # a healthy candidate: compared, agreement recorded
    for i in range(20):
        assert infer(stub, "shadowed", float(i)) == 1
    deadline = time.monotonic() + 5
    while admin.shadow_stats("shadowed").get((1, 3), apb.ShadowPairStats()).compared < 20:
        assert time.monotonic() < deadline, admin.shadow_stats("shadowed")
        time.sleep(0.05)
    pair = admin.shadow_stats("shadowed")[(1, 3)]
    assert pair.agreement == 1.0 and pair.failed == 0 and pair.latency_max_seconds > 0
