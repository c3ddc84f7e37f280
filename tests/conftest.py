"""Shared fixtures: the example model repository, built once, and a real server serving it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import ROOT, ServerProcess, start_server

MODELS = ROOT / "models"
CUDART = (
    Path(sys.prefix)
    / "lib"
    / f"python{sys.version_info.major}.{sys.version_info.minor}"
    / "site-packages"
    / "nvidia"
    / "cuda_runtime"
    / "lib"
)


@pytest.fixture(scope="session")
def example_models() -> Path:
    """The example repository, built if needed (`serving models build` is idempotent)."""
    subprocess.run(
        [sys.executable, "-m", "serving", "models", "build", "--model-repository", str(MODELS)],
        check=True,
        cwd=ROOT,
    )
    return MODELS


@pytest.fixture(scope="session")
def live_server(example_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server on the example repository for the whole session (tests must not unload its models)."""
    log = tmp_path_factory.mktemp("live_server") / "server.log"
    server = start_server(example_models, log)
    yield server
    code = server.stop()
    assert code == 0, f"server exited with {code}:\n{server.log()[-4000:]}"


@pytest.fixture(scope="session")
def perf_analyzer_env() -> dict[str, str]:
    """perf_analyzer (inside tritonclient 2.41.0) needs libcudart.so.12 from nvidia-cuda-runtime-cu12."""
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = f"{CUDART}:{env.get('LD_LIBRARY_PATH', '')}"
    return env
