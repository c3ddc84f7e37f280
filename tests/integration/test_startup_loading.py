"""Explicit model control (the default) loads at start only what `--load-model` names, as Triton does:
nothing when none is named, `--load-model a` only a, `--load-model '*'` everything."""

from __future__ import annotations

from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient

from tests.model_factory import write_add_repository
from tests.servers import start_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    write_add_repository(root, "a")
    write_add_repository(root, "b")
    return root


def _states(repository: Path, log: Path, *flags: str) -> tuple[dict[str, str], dict[str, bool]]:
    server = start_server(repository, log, *flags, load_all=False)
    try:
        with grpcclient.InferenceServerClient(server.grpc_address) as client:
            index = client.get_model_repository_index(as_json=True)["models"]
            states = {m["name"]: m.get("state", "") for m in index}
            ready = {name: client.is_model_ready(name) for name in ("a", "b")}
    finally:
        assert server.stop() == 0, server.log()[-3000:]
    return states, ready


def test_explicit_mode_without_load_model_loads_nothing(repository: Path, tmp_path: Path) -> None:
    states, ready = _states(repository, tmp_path / "server.log", "--model-control-mode", "explicit")
    assert states == {"a": "UNAVAILABLE", "b": "UNAVAILABLE"}
    assert ready == {"a": False, "b": False}


def test_load_model_names_the_models_loaded_at_start(repository: Path, tmp_path: Path) -> None:
    states, ready = _states(repository, tmp_path / "server.log", "--load-model", "a")
    assert states == {"a": "READY", "b": "UNAVAILABLE"}
    assert ready == {"a": True, "b": False}


def test_load_model_star_loads_everything(repository: Path, tmp_path: Path) -> None:
    states, ready = _states(repository, tmp_path / "server.log", "--load-model", "*")
    assert states == {"a": "READY", "b": "READY"}
    assert ready == {"a": True, "b": True}


def test_mode_none_loads_everything_without_load_model(repository: Path, tmp_path: Path) -> None:
    states, ready = _states(repository, tmp_path / "server.log", "--model-control-mode", "none")
    assert ready == {"a": True, "b": True}, states
