"""The example model repository builder (models/build.py) and the ResNet-50 module (models/resnet50.py).

digits is built for real into a temporary copy of the repository (a few seconds on a CPU); resnet50 is
too slow to build here, so its module is tested directly at a small size.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")

MODELS_DIR = Path(__file__).resolve().parents[2] / "models"


def load_module(name: str, filename: str) -> ModuleType:
    """models/ is not a package: load a file by path, once, under ``name``."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, MODELS_DIR / filename)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


models_build = load_module("serving_models_build", "build.py")
resnet50 = load_module("resnet50", "resnet50.py")


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    for config in MODELS_DIR.glob("*/config.pbtxt"):
        (root / config.parent.name).mkdir()
        shutil.copy(config, root / config.parent.name / "config.pbtxt")
    reports = list(models_build.build_models(root, only=("digits",)))
    assert [(report.name, report.built) for report in reports] == [("digits", True)]
    return root


@pytest.fixture(scope="module")
def test_set(repository: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(repository / "digits" / "test_set.npz") as data:
        return data["X_test"], data["y_test"]


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def output_files(model_dir: Path) -> dict[str, int]:
    return {str(p.relative_to(model_dir)): p.stat().st_mtime_ns for p in model_dir.rglob("*") if p.is_file()}


def test_digits_outputs_exist_and_config_is_untouched(repository: Path) -> None:
    digits = repository / "digits"
    for output in ("test_set.npz", "1/model.onnx", "2/model.pt", "1/accuracy.json", "2/reference.json"):
        assert (digits / output).is_file(), output
    assert (digits / "config.pbtxt").read_bytes() == (MODELS_DIR / "digits" / "config.pbtxt").read_bytes()
    assert not list(digits.glob(".staging-*"))
    assert not (repository / "resnet50" / "1").exists()


def test_test_set_is_float32_pixels_and_int64_labels(test_set: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = test_set
    assert x.dtype == np.float32 and x.shape == (450, 64)
    assert y.dtype == np.int64 and y.shape == (450,)
    assert 0.0 <= x.min() and x.max() <= 16.0


@pytest.mark.parametrize(("version", "framework"), [("1", "onnxruntime"), ("2", "torchscript")])
def test_digits_accuracy_recorded(repository: Path, version: str, framework: str) -> None:
    record = read_json(repository / "digits" / version / "accuracy.json")
    assert record["framework"] == framework
    assert record["n_test"] == 450
    assert record["accuracy"] >= 0.95


def test_onnx_signature_is_input_to_probabilities(repository: Path) -> None:
    graph = onnx.load(str(repository / "digits" / "1" / "model.onnx")).graph
    assert [i.name for i in graph.input] == ["input"]
    assert [o.name for o in graph.output] == ["probabilities"]
    for value, width in ((graph.input[0], 64), (graph.output[0], 10)):
        tensor = value.type.tensor_type
        assert tensor.elem_type == onnx.TensorProto.FLOAT
        dims = tensor.shape.dim
        assert len(dims) == 2 and not dims[0].HasField("dim_value") and dims[1].dim_value == width


def test_onnx_accuracy_matches_record(repository: Path, test_set: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = test_set
    session = onnxruntime.InferenceSession(
        str(repository / "digits" / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    probabilities = session.run(None, {"input": x})[0]
    assert probabilities.shape == (450, 10)
    accuracy = float((probabilities.argmax(axis=1) == y).mean())
    assert accuracy == read_json(repository / "digits" / "1" / "accuracy.json")["accuracy"]


def test_torchscript_returns_probabilities(repository: Path, test_set: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = test_set
    module = torch.jit.load(str(repository / "digits" / "2" / "model.pt"))  # type: ignore[no-untyped-call]
    with torch.inference_mode():
        probabilities = module(torch.from_numpy(x[:37]))
    assert probabilities.dtype == torch.float32 and probabilities.shape == (37, 10)
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(37))


@pytest.mark.parametrize("version", ["1", "2"])
def test_reference_distribution_counts_sum_to_n(repository: Path, version: str) -> None:
    reference = read_json(repository / "digits" / version / "reference.json")
    assert reference["output"] == "probabilities" and reference["kind"] == "classification"
    assert len(reference["class_counts"]) == 10 and sum(reference["class_counts"]) == reference["n"] == 450
    histogram = reference["confidence_hist"]
    assert histogram["edges"] == [round(i / 10, 1) for i in range(11)]
    assert len(histogram["counts"]) == 10 and sum(histogram["counts"]) == 450


def test_second_build_is_a_no_op(repository: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = output_files(repository / "digits")
    models_build.build(repository, only=("digits",))
    first_line = capsys.readouterr().out.splitlines()[0]
    assert first_line.startswith("digits") and "up to date" in first_line
    reports = list(models_build.build_models(repository, only=("digits",)))
    assert [report.built for report in reports] == [False]
    assert output_files(repository / "digits") == before


def test_changed_stamp_means_out_of_date(repository: Path, tmp_path: Path) -> None:
    digits = models_build.select_builders(["digits"])[0]
    digest = models_build.source_digest(digits)
    assert models_build.is_up_to_date(repository, digits, digest)
    assert not models_build.is_up_to_date(repository, digits, "0" * 64)
    assert not models_build.is_up_to_date(tmp_path, digits, digest)  # no stamp, no outputs
    assert json.loads((repository / ".build-stamp").read_text()) == {"digits": digest}


def test_missing_config_and_unknown_model_are_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="config.pbtxt"):
        list(models_build.build_models(tmp_path, only=["digits"]))
    with pytest.raises(ValueError, match="unknown model"):
        list(models_build.build_models(tmp_path, only=["nope"]))


# --- resnet50 module ------------------------------------------------------------------------------


def small_resnet() -> torch.nn.Module:
    torch.manual_seed(0)
    model: torch.nn.Module = resnet50.ResNet50(num_classes=10, blocks=(1, 1, 1, 1), width=8)
    resnet50.calibrate_batchnorm(model, torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8))
    return model.eval()


def images(batch: int = 2) -> torch.Tensor:
    return torch.randint(
        0, 256, (batch, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
    )


def test_full_resnet50_matches_torchvision_parameter_count() -> None:
    model = resnet50.ResNet50()
    assert sum(p.numel() for p in model.parameters()) == 25_557_032  # torchvision.models.resnet50()


def test_resnet_takes_uint8_and_returns_float_logits() -> None:
    with torch.inference_mode():
        logits = small_resnet()(images())
    assert logits.dtype == torch.float32 and logits.shape == (2, 10)
    assert bool(torch.isfinite(logits).all())


def test_calibration_leaves_eval_mode_and_finite_statistics() -> None:
    model = small_resnet()
    assert not model.training
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        assert bn.running_var is not None and float(bn.running_var.min()) > 0
        assert bn.momentum == 0.1


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_scripted_resnet_input_cast_follows_the_weights(dtype: torch.dtype) -> None:
    model = small_resnet()
    with torch.inference_mode():
        expected = model(images())
    scripted = torch.jit.script(model).to(dtype)  # what the server does for precision fp16
    try:
        with torch.inference_mode():
            logits = scripted(images())
    except RuntimeError as error:  # pragma: no cover - depends on the CPU build of torch
        pytest.skip(f"this torch build has no CPU {dtype} convolution: {error}")
    assert logits.dtype == dtype and logits.shape == (2, 10)
    torch.testing.assert_close(logits.float(), expected, rtol=0.1, atol=0.1)
