"""`serving models build` runs Python from the model repository only when told to: the project's own
example builder (models/build.py) runs; any other repository's build.py needs --allow-build-script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.servers import ROOT

SCRIPT = """
from pathlib import Path
def build(repository, force=False):
    (Path(repository) / "ran").write_text("the repository's code ran")
"""


def build(repository: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "serving", "models", "build", "--model-repository", str(repository), *flags],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


def test_a_foreign_build_script_does_not_run_without_the_flag(tmp_path: Path) -> None:
    (tmp_path / "build.py").write_text(SCRIPT)
    result = build(tmp_path)
    assert result.returncode == 2 and "--allow-build-script" in result.stderr, result.stderr
    assert not (tmp_path / "ran").exists()
    result = build(tmp_path, "--allow-build-script")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "ran").read_text() == "the repository's code ran"


def test_a_link_to_a_foreign_script_is_still_foreign(tmp_path: Path) -> None:
    (tmp_path / "elsewhere.py").write_text(SCRIPT)
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "build.py").symlink_to(tmp_path / "elsewhere.py")
    assert build(tmp_path / "repo").returncode == 2 and not (tmp_path / "repo" / "ran").exists()


def test_the_project_builder_runs_without_the_flag() -> None:
    result = build(ROOT / "models")  # already built: a no-op that still runs models/build.py
    assert result.returncode == 0 and "models built" in result.stdout, result.stderr


def test_no_build_script(tmp_path: Path) -> None:
    result = build(tmp_path, "--allow-build-script")
    assert result.returncode == 2 and "not found" in result.stderr
