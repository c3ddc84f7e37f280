"""The digits rollout candidates (models/digits_candidates.py), built for real into a temporary repository.

good: as accurate as version 2, mostly the same answers; slow: version 2's answers, exactly, but each call
burns CPU; wrong: every answer moved to the next class. They land in candidates/digits/, which the model
repository does not serve: the existing digits versions are unchanged for every other test.
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from serving.lifecycle.repository import ModelRepository
from tests.unit.test_models_build import MODELS_DIR, load_module

pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")

models_build = load_module("serving_models_build", "build.py")
Module = torch.jit.ScriptModule


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    (root / "digits").mkdir()
    shutil.copy(MODELS_DIR / "digits" / "config.pbtxt", root / "digits" / "config.pbtxt")
    reports = list(models_build.build_models(root, only=("digits", "digits-candidates")))
    assert [(report.name, report.built) for report in reports] == [
        ("digits", True),
        ("digits-candidates", True),
    ]
    return root


def load(path: Path) -> Module:
    module: Module = torch.jit.load(str(path)).eval()  # type: ignore[no-untyped-call]
    return module


@pytest.fixture(scope="module")
def outputs(repository: Path) -> dict[str, np.ndarray]:
    with np.load(repository / "digits" / "test_set.npz") as data:
        x = torch.from_numpy(data["X_test"])
    paths = {"v2": repository / "digits" / "2" / "model.pt"}
    paths |= {
        name: repository / "candidates" / "digits" / name / "model.pt" for name in ("good", "slow", "wrong")
    }
    with torch.inference_mode():
        return {name: load(path)(x).numpy() for name, path in paths.items()}


def test_candidates_are_not_served_from_where_they_are_built(repository: Path) -> None:
    assert ModelRepository(repository).model_names() == ["digits"]
    assert sorted(p.name for p in (repository / "digits").iterdir() if p.is_dir()) == ["1", "2"]
    folder = repository / "candidates" / "digits"
    assert sorted(p.name for p in folder.iterdir()) == ["good", "slow", "wrong"]
    for name in ("good", "slow", "wrong"):
        assert sorted(p.name for p in (folder / name).iterdir()) == [
            "accuracy.json", "candidate.json", "model.pt", "reference.json"]  # fmt: skip


def test_a_candidate_copied_in_as_version_3_is_served(repository: Path, tmp_path: Path) -> None:
    live = tmp_path / "live"
    shutil.copytree(repository / "digits", live / "digits")
    shutil.copytree(repository / "candidates" / "digits" / "good", live / "digits" / "3")
    spec = ModelRepository(live).read("digits")
    assert spec.name == "digits"
    assert sorted(p.name for p in (live / "digits").iterdir() if p.is_dir()) == ["1", "2", "3"]


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.argmax(axis=1) == b.argmax(axis=1)).mean())


def test_good_is_as_accurate_and_mostly_agrees(repository: Path, outputs: dict[str, np.ndarray]) -> None:
    record = json.loads((repository / "candidates" / "digits" / "good" / "accuracy.json").read_text())
    assert record["accuracy"] >= 0.95 and record["framework"] == "torchscript"
    assert 0.95 <= agreement(outputs["good"], outputs["v2"]) < 1.0  # another seed: not a copy
    assert outputs["good"].shape == (450, 10) and outputs["good"].dtype == np.float32


def test_slow_answers_exactly_as_version_2(outputs: dict[str, np.ndarray]) -> None:
    np.testing.assert_allclose(outputs["slow"], outputs["v2"], rtol=0, atol=1e-6)


def test_wrong_moves_every_answer_to_the_next_class(repository: Path, outputs: dict[str, np.ndarray]) -> None:
    np.testing.assert_array_equal(outputs["wrong"].argmax(axis=1), (outputs["v2"].argmax(axis=1) + 1) % 10)
    np.testing.assert_allclose(np.sort(outputs["wrong"], axis=1), np.sort(outputs["v2"], axis=1), atol=1e-6)
    record = json.loads((repository / "candidates" / "digits" / "wrong" / "accuracy.json").read_text())
    assert record["accuracy"] < 0.05


def median_call_s(module: Module, x: torch.Tensor, repeats: int = 15) -> float:
    times = []
    with torch.inference_mode():
        for _ in range(repeats):
            started = time.perf_counter()
            module(x)
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def test_slow_costs_more_per_batch_not_per_row(repository: Path) -> None:
    """Side by side on one thread: the burn is a fixed cost per call, whatever the batch size."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        slow = load(repository / "candidates" / "digits" / "slow" / "model.pt")
        good = load(repository / "candidates" / "digits" / "good" / "model.pt")
        one, many = torch.zeros(1, 64), torch.zeros(64, 64)
        slow_one, slow_many = median_call_s(slow, one), median_call_s(slow, many)
        good_one = median_call_s(good, one)
    finally:
        torch.set_num_threads(threads)
    assert slow_one > 5 * good_one, (slow_one, good_one)
    assert slow_many < 2 * slow_one, (slow_many, slow_one)
