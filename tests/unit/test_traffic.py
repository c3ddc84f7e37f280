"""TrafficControl (the policy in force, admin changes) and ShadowRunner (bounded shadow copies)."""

from __future__ import annotations

import asyncio
import json
import math
import random
from pathlib import Path

import numpy as np
import pytest

from serving.core.request import InferenceRequest
from serving.errors import Unavailable
from serving.traffic.policy import PolicyError, ShadowPolicy, TrafficPolicy
from serving.traffic.router import TrafficControl, traffic_shares
from serving.traffic.shadow import ShadowRunner
from serving.traffic.store import PolicyStore
from serving.types import Array


@pytest.fixture
def store(tmp_path: Path) -> PolicyStore:
    (tmp_path / "m").mkdir()
    return PolicyStore(tmp_path)


@pytest.fixture
def traffic(store: PolicyStore) -> TrafficControl:
    return TrafficControl(store, rng=random.Random(7))


def test_without_a_policy_the_highest_ready_version_serves(traffic: TrafficControl) -> None:
    traffic.refresh("m")
    assert traffic.policy("m") is None
    assert traffic.choose("m", [1, 3, 2], "key") == 3
    with pytest.raises(Unavailable):
        traffic.choose("m", [], None)


async def test_a_change_is_written_and_in_force_when_it_returns(
    traffic: TrafficControl, store: PolicyStore
) -> None:
    entry = await traffic.split("m", {1: 90, 2: 10}, True, "alice via test")
    assert entry.action == "split" and entry.source == "alice via test" and entry.previous is None
    assert traffic.policy("m") == TrafficPolicy({1: 90, 2: 10}, sticky=True)
    assert store.load("m") == traffic.policy("m")
    assert not traffic.refresh("m")  # the file is what is in force: nothing to re-read
    await traffic.set_shadow("m", 3, 0.25, None, "bob")
    await traffic.promote("m", 2, "bob")
    assert traffic.policy("m") == TrafficPolicy({2: 100}, sticky=True)
    await traffic.rollback("m", "bob")
    assert traffic.policy("m") == TrafficPolicy({1: 90, 2: 10}, sticky=True, shadow=ShadowPolicy(3, 0.25))
    assert [e.action for e in await traffic.history("m", None)] == ["split", "shadow", "promote", "rollback"]


async def test_shadow_without_a_policy_pins_the_default_version(traffic: TrafficControl) -> None:
    await traffic.set_shadow("m", 3, 0.5, 2, "ops")
    assert traffic.policy("m") == TrafficPolicy({2: 100}, shadow=ShadowPolicy(3, 0.5))
    assert traffic.shadow_for("m", 2, [2, 3]) in (3, None)
    assert traffic.shadow_for("m", 3, [2, 3]) is None  # never the version that served


async def test_an_invalid_file_keeps_the_last_good_policy(
    traffic: TrafficControl, store: PolicyStore
) -> None:
    await traffic.split("m", {1: 1}, None, "ops")
    store.policy_path("m").write_text('{"weights": {"1": -1}}')
    assert not traffic.refresh("m")
    status = traffic.status("m")
    assert status.policy == TrafficPolicy({1: 1}) and "weights[1]" in status.error
    assert status.error.startswith(str(store.policy_path("m")))
    assert traffic.choose("m", [1, 2], None) == 1
    await traffic.split("m", {2: 1}, None, "ops")  # a change replaces the invalid file
    assert traffic.status("m").error == "" and traffic.policy("m") == TrafficPolicy({2: 1})


async def test_a_file_edited_by_hand_is_picked_up_and_recorded(
    traffic: TrafficControl, store: PolicyStore
) -> None:
    traffic.refresh("m")
    store.policy_path("m").write_text(json.dumps({"weights": {"2": 5}}))
    assert traffic.refresh("m")
    traffic.reconcile("m")
    assert traffic.policy("m") == TrafficPolicy({2: 5})
    assert [(e.action, e.source) for e in store.history("m")] == [("edit", "file")]


async def test_concurrent_changes_are_serialised(traffic: TrafficControl, store: PolicyStore) -> None:
    await asyncio.gather(*(traffic.split("m", {1: n, 2: 1}, None, f"op{n}") for n in range(1, 11)))
    entries = store.history("m")
    assert len(entries) == 10
    for before, after in zip(entries, entries[1:], strict=False):
        assert after.previous == before.policy  # each change saw the one before it
    assert traffic.policy("m") == entries[-1].policy


def test_rollback_with_nothing_to_roll_back_is_refused(traffic: TrafficControl) -> None:
    with pytest.raises(PolicyError, match="nothing to roll back"):
        asyncio.run(traffic.rollback("m", "ops"))


def test_traffic_shares() -> None:
    assert traffic_shares(None, [1, 2]) == {2: 1.0}
    assert traffic_shares(TrafficPolicy({1: 60, 2: 30, 3: 10}), [1, 3]) == {1: 60 / 70, 3: 10 / 70}
    assert traffic_shares(TrafficPolicy({3: 1}), [1]) == {}


# ---- shadows -----------------------------------------------------------------------------------------


class FakeTarget:
    def __init__(self, version: int, addend: float = 0.0, *, fail: bool = False) -> None:
        self.version = version
        self.addend = addend
        self.fail = fail
        self.gate = asyncio.Event()
        self.gate.set()
        self.calls = 0

    async def infer(
        self, request: InferenceRequest, deadline: float | None, timeout_s: float | None
    ) -> dict[str, Array]:
        self.calls += 1
        await self.gate.wait()
        if self.fail:
            raise RuntimeError("shadow blew up")
        return {"y": request.inputs["x"] + self.addend}


def request() -> InferenceRequest:
    return InferenceRequest("m", "", "", {"x": np.array([[0.0, 1.0], [2.0, 1.0]], np.float32)})


async def test_shadow_answers_are_compared_per_version_pair() -> None:
    runner = ShadowRunner()
    primary = {"y": np.array([[0.0, 1.0], [2.0, 1.0]], np.float32)}
    assert runner.submit("m", 1, FakeTarget(2), request(), primary)
    assert runner.submit(
        "m", 1, FakeTarget(3, addend=0.0), request(), {"y": np.array([[1.0, 0.0], [2.0, 1.0]])}
    )
    await runner.close()
    stats = {(s.primary, s.shadow): s for s in runner.stats("m")}
    assert stats[(1, 2)].compared == 1 and stats[(1, 2)].agreement == 1.0
    assert stats[(1, 3)].agreement == 0.5  # one of two rows has another argmax
    assert stats[(1, 2)].latency_max_s >= 0 and math.isnan(stats[(1, 2)].mean_abs_diff)


async def test_shadow_failures_are_counted_never_raised() -> None:
    runner = ShadowRunner()
    runner.submit("m", 1, FakeTarget(2, fail=True), request(), {"y": np.zeros((2, 2))})
    await runner.close()
    [stats] = runner.stats("m")
    assert (stats.failed, stats.compared) == (1, 0)


async def test_shadows_are_bounded_and_dropped_beyond_the_bound() -> None:
    runner = ShadowRunner(max_outstanding=2)
    target = FakeTarget(2)
    target.gate.clear()
    results = [runner.submit("m", 1, target, request(), {"y": np.zeros((2, 2))}) for _ in range(3)]
    assert results == [True, True, False]
    await runner.close(timeout_s=0.05)  # still blocked: cancelled
    [stats] = runner.stats("m")
    assert (stats.dropped, stats.failed, stats.compared) == (1, 2, 0)
    runner.forget("m")
    assert runner.stats("m") == []
