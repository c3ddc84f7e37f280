"""Poll mode: a model is (re)loaded only once it looked the same in two consecutive polls."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import cast

import pytest

from serving.errors import ModelConfigError, Unavailable
from serving.lifecycle.control import ModelControl
from serving.lifecycle.poller import RepositoryPoller, scan_repository
from serving.lifecycle.registry import ModelRegistry
from serving.traffic.policy import TrafficPolicy
from serving.traffic.router import TrafficControl
from serving.traffic.store import PolicyStore


class FakeControl:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def load(self, name: str) -> None:
        self.calls.append(("load", name))
        if name == "broken":
            raise ModelConfigError("broken/config.pbtxt: bad")

    async def unload(self, name: str) -> None:
        self.calls.append(("unload", name))


def model(root: Path, name: str, versions: tuple[int, ...] = (1,)) -> None:
    (root / name).mkdir(parents=True, exist_ok=True)
    (root / name / "config.pbtxt").write_text(f'name: "{name}"')
    for version in versions:
        (root / name / str(version)).mkdir(exist_ok=True)
        (root / name / str(version) / "model.onnx").write_bytes(b"v" * version)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    model(tmp_path, "a")
    return tmp_path


def poller(repo: Path, control: FakeControl, traffic: TrafficControl | None = None) -> RepositoryPoller:
    polling = RepositoryPoller(repo, cast(ModelControl, control), traffic, interval_s=1.0)
    polling.prime(scan_repository(repo))
    return polling


async def test_a_changed_model_loads_after_two_equal_polls(repo: Path) -> None:
    control = FakeControl()
    polling = poller(repo, control)
    await polling.poll_once()
    assert control.calls == []  # nothing changed
    model(repo, "a", versions=(1, 2))
    await polling.poll_once()
    assert control.calls == []  # changed since the last poll: wait
    await polling.poll_once()
    assert control.calls == [("load", "a")]
    await polling.poll_once()
    assert control.calls == [("load", "a")]  # applied: not again


async def test_a_file_still_growing_is_never_loaded(repo: Path) -> None:
    control = FakeControl()
    polling = poller(repo, control)
    target = repo / "a" / "2" / "model.onnx"
    target.parent.mkdir()
    for size in range(1, 6):
        target.write_bytes(b"x" * size)  # a copy in progress: each poll sees another size
        await polling.poll_once()
    assert control.calls == []
    await polling.poll_once()
    assert control.calls == [("load", "a")]


async def test_new_and_removed_models(repo: Path) -> None:
    control = FakeControl()
    polling = poller(repo, control)
    model(repo, "b")
    model(repo, "broken")
    shutil.rmtree(repo / "a")
    await polling.poll_once()
    await polling.poll_once()
    assert sorted(control.calls) == [("load", "b"), ("load", "broken"), ("unload", "a")]
    await polling.poll_once()
    assert len(control.calls) == 3  # a failed load is retried only when the model changes again


async def test_a_changed_policy_file_is_put_in_force(repo: Path) -> None:
    store = PolicyStore(repo)
    traffic = TrafficControl(store)
    traffic.refresh("a")
    polling = poller(repo, FakeControl(), traffic)
    (repo / "a" / "traffic.json").write_text('{"weights": {"1": 3}}')
    await polling.poll_once()
    assert traffic.policy("a") == TrafficPolicy({1: 3})
    assert [e.action for e in store.history("a")] == ["edit"]


async def test_explicit_load_and_unload_are_refused_in_poll_mode(repo: Path) -> None:
    control = ModelControl(cast(ModelRegistry, object()), mode="poll")
    with pytest.raises(Unavailable, match="poll mode"):
        await control.request_load("a")
    with pytest.raises(Unavailable, match="poll mode"):
        await control.request_unload("a")
