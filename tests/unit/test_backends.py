"""The onnxruntime and torch backends on the CPU, with tiny models built here from fixed seeds."""

from __future__ import annotations

import subprocess
import sys
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from serving.backends.base import Backend, InstanceSpec, Placement, TensorDecl
from serving.backends.devices import DeviceInventory
from serving.backends.loader import create_backend, gpu_capable
from serving.backends.onnx import OnnxBackend
from serving.backends.platforms import MODEL_FILENAMES, platform_name
from serving.backends.torch import TorchBackend, load_module
from serving.batching.tensors import merge_inputs
from serving.errors import ModelConfigError, ModelExecutionError, Unavailable
from serving.types import Array

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")

CPU = Placement("cpu")
CPU_ONLY = DeviceInventory(gpu_count=0, ort_providers=("CPUExecutionProvider",))
FP32 = np.dtype(np.float32)
INPUT, PROBS = [TensorDecl("input", FP32)], [TensorDecl("probs", FP32)]
RNG_SEED = 7


class Tiny(torch.nn.Module):
    """Linear 4→3 + softmax; `returns` picks the output structure."""

    def __init__(self, returns: str = "tensor") -> None:
        super().__init__()
        torch.manual_seed(RNG_SEED)
        self.linear = torch.nn.Linear(4, 3)
        self.returns = returns

    def forward(self, x: torch.Tensor) -> Any:
        logits = self.linear(x)
        probs = torch.softmax(logits, dim=-1)
        if self.returns == "tuple":
            return probs, logits
        if self.returns == "dict":
            return {"logits": logits, "probs": probs}
        return probs


def weights() -> tuple[Array, Array]:
    linear = Tiny().linear
    return linear.weight.detach().numpy().T.copy(), linear.bias.detach().numpy().copy()


def reference(x: Array) -> tuple[Array, Array]:
    """(probs, logits) in numpy."""
    w, b = weights()
    logits = x.astype(np.float64) @ w + b
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True), logits


def batch(size: int) -> Array:
    return np.random.default_rng(size).standard_normal((size, 4)).astype(np.float32)


def write_onnx_model(path: Path) -> Path:
    """MatMul + Add + Softmax with Tiny's weights; outputs probs then logits, batch dim dynamic."""
    w, b = weights()
    nodes = [
        helper.make_node("MatMul", ["input", "W"], ["mm"]),
        helper.make_node("Add", ["mm", "B"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        [
            helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 3]),
        ],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def write_torchscript(path: Path, returns: str = "tensor") -> Path:
    module = Tiny(returns).eval()
    traced = torch.jit.trace(module, torch.from_numpy(batch(2)), strict=False)  # type: ignore[no-untyped-call]
    torch.jit.save(traced, str(path))
    return path


def write_exported(path: Path, returns: str = "tensor") -> Path:
    size = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(
        Tiny(returns).eval(), (torch.from_numpy(batch(2)),), dynamic_shapes=({0: size},)
    )
    torch.export.save(program, path)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {
        "onnx": write_onnx_model(root / "model.onnx"),
        "pt": write_torchscript(root / "model.pt"),
        "pt2": write_exported(root / "model.pt2"),
        "pt_tuple": write_torchscript(root / "tuple.pt", "tuple"),
        "pt2_dict": write_exported(root / "dict.pt2", "dict"),
    }


def torch_backend(
    model_file: Path,
    parameters: Mapping[str, str] | None = None,
    outputs: Mapping[str, np.dtype[Any]] | None = None,
) -> TorchBackend:
    outputs = outputs or {"probs": FP32}
    instance = InstanceSpec(model_file, CPU, parameters or {}, CPU_ONLY)
    declared = [TensorDecl(name, dtype) for name, dtype in outputs.items()]
    return TorchBackend(instance, [TensorDecl("input", FP32)], declared)


@pytest.fixture(params=["onnx", "pt", "pt2"])
def backend(request: pytest.FixtureRequest, models: dict[str, Path]) -> Iterator[Backend]:
    model_file = models[request.param]
    created: Backend
    if request.param == "onnx":
        created = OnnxBackend(InstanceSpec(model_file, CPU, {}, CPU_ONLY))
    else:
        created = torch_backend(model_file)
    yield created
    created.close()


@pytest.mark.parametrize("size", [1, 5])
def test_each_backend_matches_the_numpy_reference(backend: Backend, size: int) -> None:
    x = batch(size)
    result = backend.infer({"input": x})
    probs = result.outputs["probs"]
    assert probs.dtype == np.float32
    assert probs.shape == (size, 3)
    np.testing.assert_allclose(probs, reference(x)[0], atol=1e-5)
    timings = result.timings
    assert min(timings.input_ns, timings.infer_ns, timings.output_ns) >= 0
    assert timings.infer_ns > 0


def test_on_the_cpu_every_backend_lets_the_batcher_merge_into_plain_memory(backend: Backend) -> None:
    # A GPU torch backend hands out pinned memory here (run by scripts/gpu_check.sh on a device).
    assert backend.host_buffer("input", (5, 4), np.dtype(np.float32)) is None
    merged = merge_inputs([{"input": batch(2)}, {"input": batch(3)}], backend.host_buffer)
    np.testing.assert_allclose(backend.infer(merged).outputs["probs"][2:], reference(batch(3))[0], atol=1e-5)


def test_the_torch_backend_looks_at_a_read_only_view_for_pinning_without_a_warning() -> None:
    """A front-end slot's inputs are read-only views; torch.from_numpy warns on those (once per process,
    so this runs in a fresh one, with warnings as errors). The backend only copies them to the device."""
    code = (
        "import numpy as np\n"
        "from serving.backends.torch import _pinned\n"
        "view = np.zeros(4, np.float32)\n"
        "view.flags.writeable = False\n"
        "assert _pinned(view) is None  # no GPU here: nothing is pinned\n"
    )
    result = subprocess.run(
        [sys.executable, "-W", "error::UserWarning", "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_close_is_idempotent_and_refuses_later_batches(backend: Backend) -> None:
    backend.close()
    backend.close()
    with pytest.raises(Unavailable, match="closed"):
        backend.infer({"input": batch(1)})


def test_onnx_returns_every_output_and_ignores_extra_inputs(models: dict[str, Path]) -> None:
    x = batch(3)
    onnx_backend = OnnxBackend(InstanceSpec(models["onnx"], CPU, {"cpu_threads": "1"}, CPU_ONLY))
    result = onnx_backend.infer({"input": x, "unrelated": x})
    probs, logits = reference(x)
    assert sorted(result.outputs) == ["logits", "probs"]
    np.testing.assert_allclose(result.outputs["logits"], logits, atol=1e-5)
    np.testing.assert_allclose(result.outputs["probs"], probs, atol=1e-5)


@pytest.mark.parametrize("threads", ["0", "two", "-1"])
def test_onnx_rejects_bad_cpu_threads(models: dict[str, Path], threads: str) -> None:
    with pytest.raises(ModelConfigError, match="cpu_threads"):
        OnnxBackend(InstanceSpec(models["onnx"], CPU, {"cpu_threads": threads}, CPU_ONLY))


@pytest.mark.parametrize("kind", ["pt", "pt2"])
def test_fp16_is_ignored_on_the_cpu(models: dict[str, Path], kind: str) -> None:
    x = batch(5)
    fp32 = torch_backend(models[kind]).infer({"input": x}).outputs["probs"]
    fp16 = torch_backend(models[kind], {"precision": "fp16"}).infer({"input": x}).outputs["probs"]
    assert fp16.dtype == np.float32
    np.testing.assert_array_equal(fp16, fp32)


@pytest.mark.parametrize("kind", ["pt", "pt2"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_both_formats_convert_to_the_gpu_precisions(
    models: dict[str, Path], kind: str, dtype: torch.dtype
) -> None:
    """What TorchBackend does to the module for fp16/bf16 on a GPU, checked with CPU kernels."""
    module = load_module(models[kind], torch.device("cpu")).to(dtype)
    x = batch(5)
    with torch.inference_mode():
        probs = module(torch.from_numpy(x).to(dtype)).float().numpy()
    np.testing.assert_allclose(probs, reference(x)[0], atol=2e-2)


def test_torch_casts_outputs_to_the_config_dtype(models: dict[str, Path]) -> None:
    result = torch_backend(models["pt"], outputs={"probs": np.dtype(np.float64)}).infer({"input": batch(2)})
    assert result.outputs["probs"].dtype == np.float64


def test_torch_rejects_an_unknown_precision(models: dict[str, Path]) -> None:
    with pytest.raises(ModelConfigError, match="precision"):
        torch_backend(models["pt"], {"precision": "int4"})


def test_torch_maps_tuple_outputs_in_order(models: dict[str, Path]) -> None:
    x = batch(4)
    outputs = torch_backend(models["pt_tuple"], outputs={"probs": FP32, "logits": FP32}).infer({"input": x})
    probs, logits = reference(x)
    np.testing.assert_allclose(outputs.outputs["probs"], probs, atol=1e-5)
    np.testing.assert_allclose(outputs.outputs["logits"], logits, atol=1e-5)


def test_torch_maps_dict_outputs_by_name(models: dict[str, Path]) -> None:
    x = batch(4)
    outputs = torch_backend(models["pt2_dict"], outputs={"logits": FP32, "probs": FP32}).infer({"input": x})
    probs, logits = reference(x)
    np.testing.assert_allclose(outputs.outputs["probs"], probs, atol=1e-5)
    np.testing.assert_allclose(outputs.outputs["logits"], logits, atol=1e-5)


def test_torch_fails_the_batch_when_outputs_do_not_match_the_config(models: dict[str, Path]) -> None:
    with pytest.raises(ModelExecutionError, match="2 value"):
        torch_backend(models["pt_tuple"]).infer({"input": batch(1)})
    with pytest.raises(ModelExecutionError, match="scores"):
        torch_backend(models["pt2_dict"], outputs={"scores": FP32}).infer({"input": batch(1)})


def test_torch_takes_read_only_inputs_without_warning(models: dict[str, Path]) -> None:
    x = batch(3)
    read_only = np.frombuffer(x.tobytes(), dtype=np.float32).reshape(3, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        probs = torch_backend(models["pt"]).infer({"input": read_only}).outputs["probs"]
    np.testing.assert_allclose(probs, reference(x)[0], atol=1e-5)


@pytest.mark.parametrize("platform", ["onnxruntime_onnx", "pytorch_libtorch", "torch_export"])
@pytest.mark.parametrize("content", [b"not a model", None])
def test_unusable_model_files_name_the_file(tmp_path: Path, platform: str, content: bytes | None) -> None:
    model_file = tmp_path / MODEL_FILENAMES[platform]
    if content is not None:
        model_file.write_bytes(content)
    with pytest.raises(ModelConfigError, match=str(model_file)):
        create_backend(platform, model_file, CPU, {}, CPU_ONLY, INPUT, PROBS)


@pytest.mark.parametrize(
    "platform", ["onnxruntime_onnx", "onnxruntime", "pytorch_libtorch", "pytorch", "torch_export"]
)
def test_create_backend_runs_each_platform(models: dict[str, Path], platform: str) -> None:
    model_file = models["pt2" if platform == "torch_export" else "pt" if "torch" in platform else "onnx"]
    assert MODEL_FILENAMES[platform_name(platform)] == model_file.name
    created = create_backend(platform, model_file, CPU, {}, CPU_ONLY, INPUT, PROBS)
    x = batch(2)
    np.testing.assert_allclose(created.infer({"input": x}).outputs["probs"], reference(x)[0], atol=1e-5)


def test_loader_rejects_unknown_platform_names() -> None:
    with pytest.raises(ModelConfigError, match="tensorflow"):
        platform_name("tensorflow")


def test_gpu_capable_depends_on_the_platform() -> None:
    torch_only = DeviceInventory(gpu_count=1, ort_providers=("CPUExecutionProvider",))
    both = DeviceInventory(gpu_count=1, ort_providers=("CUDAExecutionProvider", "CPUExecutionProvider"))
    assert not gpu_capable("onnxruntime", torch_only)
    assert gpu_capable("onnxruntime_onnx", both)
    assert gpu_capable("pytorch", torch_only)
    assert not gpu_capable("torch_export", CPU_ONLY)
