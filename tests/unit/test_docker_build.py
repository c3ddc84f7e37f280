"""The images' build stage and entrypoint, run here without a Docker engine.

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
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.model_factory import write_add_repository
from tests.servers import READY, ROOT
from tests.unit.test_dockerfile import DOCKERFILES, arg_defaults, exec_form, instructions, normalised, pins

# Ubuntu 24.04 (both base images) on x86_64: the platforms and Python the GPU set is resolved for.
GPU_PLATFORMS = " ".join(
    [f"manylinux_2_{minor}_x86_64" for minor in range(39, 4, -1)] + ["manylinux2014_x86_64"]
)


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
