"""ModelRegistry: a version is registered before it loads (listed LOADING, then WARMING, never routed
until READY); a hot swap serves the old instance until the new one is READY; a failed reload leaves the
old one serving; unload takes the model away. Backends are fakes held at the step under test."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from serving.backends.base import Backend, Placement
from serving.errors import ModelConfigError, NotFound, Unavailable
from serving.lifecycle.registry import IndexEntry, ModelRegistry
from serving.lifecycle.repository import ModelRepository, ModelSpec, VersionSource
from serving.types import Array, TensorMap
from tests.model_factory import write_add_repository
from tests.unit.fake_backend import FakeBackend


def add_one(inputs: TensorMap) -> dict[str, Array]:
    return {"y": np.asarray(inputs["x"]) + 1}


class Loader:
    """Hands out `backend`; with `gate` cleared, each load blocks in its worker thread until it is set."""

    def __init__(self) -> None:
        self.backend = FakeBackend(add_one)
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.error: Exception | None = None

    def __call__(self, source: VersionSource, spec: ModelSpec, placement: Placement) -> Backend:
        self.entered.set()
        if not self.gate.wait(timeout=30):
            raise TimeoutError("the test never opened the gate")
        if self.error is not None:
            raise self.error
        return self.backend


@pytest.fixture
def loader() -> Iterator[Loader]:
    loader = Loader()
    yield loader
    loader.gate.set()
    loader.backend.release()


@pytest.fixture
def registry(tmp_path: Path, loader: Loader) -> ModelRegistry:
    repository = ModelRepository(write_add_repository(tmp_path, "add", versions=(1,)))
    return ModelRegistry(repository, loader, lambda spec, source: [Placement("cpu")])


def states(registry: ModelRegistry) -> list[IndexEntry]:
    return [e for e in registry.index() if e.name == "add"]


async def test_a_version_is_listed_while_it_loads_and_routed_only_once_ready(
    registry: ModelRegistry, loader: Loader
) -> None:
    loader.gate.clear()
    loading = asyncio.create_task(registry.load("add"))
    assert await asyncio.to_thread(loader.entered.wait, 10)
    assert states(registry) == [IndexEntry("add", "1", "LOADING", "")]
    assert not registry.is_ready("add") and not registry.is_ready("add", "1")
    with pytest.raises(Unavailable, match="version 1 is not ready \\(LOADING"):
        registry.resolve("add", "1")
    with pytest.raises(Unavailable, match="no ready version"):
        registry.resolve("add")

    loader.backend.hold()  # the warm-up batch blocks: WARMING
    loader.gate.set()
    await loader.backend.wait_started(1)
    assert states(registry) == [IndexEntry("add", "1", "WARMING", "")]
    assert not registry.is_ready("add")

    loader.backend.release()
    await loading
    assert states(registry) == [IndexEntry("add", "1", "READY", "")]
    assert registry.resolve("add").version == 1


async def test_hot_swap_serves_the_old_instance_until_the_new_one_is_ready(
    registry: ModelRegistry, loader: Loader, tmp_path: Path
) -> None:
    await registry.load("add")
    old = registry.resolve("add", "1")
    touch(tmp_path / "add" / "1" / "model.onnx")  # a changed file: the next load swaps it
    loader.gate.clear()
    loader.entered.clear()
    swap = asyncio.create_task(registry.load("add"))
    assert await asyncio.to_thread(loader.entered.wait, 10)
    assert states(registry) == [IndexEntry("add", "1", "READY", "")]  # the serving instance speaks
    assert registry.resolve("add", "1") is old and registry.is_ready("add", "1")

    loader.gate.set()
    await swap
    new = registry.resolve("add", "1")
    assert new is not old and new.ready
    assert old.state.value == "UNLOADED"
    assert states(registry) == [IndexEntry("add", "1", "READY", "")]


async def test_a_failed_reload_leaves_the_old_instance_serving(
    registry: ModelRegistry, loader: Loader, tmp_path: Path
) -> None:
    await registry.load("add")
    old = registry.resolve("add", "1")
    touch(tmp_path / "add" / "1" / "model.onnx")
    loader.error = ModelConfigError("the new file is broken")
    with pytest.raises(ModelConfigError, match="the new file is broken"):
        await registry.load("add")
    assert registry.resolve("add") is old and old.ready
    assert states(registry) == [IndexEntry("add", "1", "READY", "")]


async def test_a_failed_first_load_is_listed_failed_and_unload_removes_the_model(
    registry: ModelRegistry, loader: Loader
) -> None:
    loader.error = ModelConfigError("cannot load")
    with pytest.raises(ModelConfigError, match="cannot load"):
        await registry.load("add")
    assert states(registry) == [IndexEntry("add", "1", "FAILED", "cannot load")]
    loader.error = None
    await registry.load("add")
    assert registry.is_ready("add", "1")
    await registry.unload("add")
    assert states(registry) == [IndexEntry("add", "", "UNAVAILABLE", "not loaded")]
    with pytest.raises(Unavailable, match="not loaded"):
        registry.model("add")
    with pytest.raises(NotFound):
        registry.model("nothing")


def touch(path: Path) -> None:
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
