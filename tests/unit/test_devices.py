"""Placement decisions, driven by hand-made inventories so the GPU branches run on a CPU-only machine."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from serving.backends.base import InstanceSpec, Placement
from serving.backends.devices import DeviceInventory, detect_inventory, gpu_index, plan_placements
from serving.backends.onnx import OnnxBackend, ort_providers
from serving.backends.torch import compute_dtype, cudnn_benchmark, torch_device
from serving.errors import ModelConfigError
from tests.unit.test_backends import write_onnx_model

CPU_ONLY = DeviceInventory(gpu_count=0, ort_providers=("CPUExecutionProvider",))
TWO_GPUS = DeviceInventory(gpu_count=2, ort_providers=("CUDAExecutionProvider", "CPUExecutionProvider"))
GPUS_WITHOUT_ORT_CUDA = DeviceInventory(gpu_count=2, ort_providers=("CPUExecutionProvider",))
MODEL = Path("/models/m/1/model.pt")


def devices(placements: list[Placement]) -> list[str]:
    return [placement.device for placement in placements]


def test_detect_inventory_on_this_machine() -> None:
    inventory = detect_inventory()
    assert inventory.gpu_count >= 0
    assert "CPUExecutionProvider" in inventory.ort_providers


@pytest.mark.parametrize(("count", "expected"), [(0, 1), (1, 1), (3, 3)])
def test_kind_cpu_places_count_instances_on_the_cpu(count: int, expected: int) -> None:
    assert devices(plan_placements("KIND_CPU", count, [], TWO_GPUS)) == ["cpu"] * expected


def test_kind_cpu_cannot_list_gpus() -> None:
    with pytest.raises(ModelConfigError, match="KIND_CPU"):
        plan_placements("KIND_CPU", 1, [0], TWO_GPUS)


def test_kind_gpu_places_count_instances_on_every_visible_gpu() -> None:
    assert devices(plan_placements("KIND_GPU", 2, [], TWO_GPUS)) == ["cuda:0", "cuda:0", "cuda:1", "cuda:1"]
    assert devices(plan_placements("KIND_GPU", 0, [], TWO_GPUS)) == ["cuda:0", "cuda:1"]


def test_kind_gpu_places_count_instances_on_each_listed_gpu() -> None:
    assert devices(plan_placements("KIND_GPU", 2, [1], TWO_GPUS)) == ["cuda:1", "cuda:1"]
    assert devices(plan_placements("KIND_GPU", 1, [1, 0], TWO_GPUS)) == ["cuda:1", "cuda:0"]


def test_kind_gpu_without_a_gpu_is_a_config_error() -> None:
    with pytest.raises(ModelConfigError, match="KIND_GPU but no GPU is visible"):
        plan_placements("KIND_GPU", 1, [], CPU_ONLY)


def test_kind_gpu_when_the_backend_cannot_use_the_gpus_is_a_config_error() -> None:
    with pytest.raises(ModelConfigError, match="CPUExecutionProvider"):
        plan_placements("KIND_GPU", 1, [], GPUS_WITHOUT_ORT_CUDA, gpu_capable=False)


@pytest.mark.parametrize("gpus", [[2], [0, 5], [-1]])
def test_out_of_range_gpus_are_a_config_error(gpus: list[int]) -> None:
    with pytest.raises(ModelConfigError, match="out of range: 2 GPU"):
        plan_placements("KIND_GPU", 1, gpus, TWO_GPUS)


def test_a_gpu_listed_twice_is_a_config_error() -> None:
    with pytest.raises(ModelConfigError, match="more than once"):
        plan_placements("KIND_AUTO", 1, [1, 1], TWO_GPUS)


def test_kind_auto_uses_the_gpus_when_it_can() -> None:
    assert devices(plan_placements("KIND_AUTO", 1, [], TWO_GPUS)) == ["cuda:0", "cuda:1"]
    assert devices(plan_placements("KIND_AUTO", 3, [0], TWO_GPUS)) == ["cuda:0"] * 3


@pytest.mark.parametrize(
    ("inventory", "gpu_capable", "gpus"),
    [(CPU_ONLY, True, []), (CPU_ONLY, True, [0]), (GPUS_WITHOUT_ORT_CUDA, False, [])],
)
def test_kind_auto_falls_back_to_the_cpu(
    inventory: DeviceInventory, gpu_capable: bool, gpus: list[int]
) -> None:
    assert devices(plan_placements("KIND_AUTO", 2, gpus, inventory, gpu_capable=gpu_capable)) == [
        "cpu",
        "cpu",
    ]


def test_unknown_kind_and_negative_count_are_config_errors() -> None:
    with pytest.raises(ModelConfigError, match="KIND_MODEL"):
        plan_placements("KIND_MODEL", 1, [], TWO_GPUS)
    with pytest.raises(ModelConfigError, match="negative"):
        plan_placements("KIND_CPU", -1, [], TWO_GPUS)


def test_gpu_index() -> None:
    assert gpu_index(Placement("cuda:3")) == 3
    assert gpu_index(Placement("cuda")) == 0
    with pytest.raises(ValueError):
        gpu_index(Placement("cpu"))


def test_ort_providers_for_each_placement() -> None:
    assert ort_providers(Placement("cpu"), TWO_GPUS, {}) == ["CPUExecutionProvider"]
    assert ort_providers(Placement("cuda:1"), TWO_GPUS, {"cpu_threads": "2"}) == [
        ("CUDAExecutionProvider", {"device_id": 1}),
        "CPUExecutionProvider",
    ]


def test_ort_providers_pass_cuda_options_through() -> None:
    parameters = {"gpu_mem_limit": "1073741824", "cudnn_conv_algo_search": "HEURISTIC", "precision": "fp16"}
    assert ort_providers(Placement("cuda:0"), TWO_GPUS, parameters) == [
        (
            "CUDAExecutionProvider",
            {"device_id": 0, "cudnn_conv_algo_search": "HEURISTIC", "gpu_mem_limit": "1073741824"},
        ),
        "CPUExecutionProvider",
    ]


def test_ort_providers_refuse_a_gpu_placement_without_the_cuda_provider() -> None:
    with pytest.raises(ModelConfigError, match="CUDAExecutionProvider"):
        ort_providers(Placement("cuda:0"), GPUS_WITHOUT_ORT_CUDA, {})


def test_onnx_backend_refuses_a_gpu_placement_without_the_cuda_provider(tmp_path: Path) -> None:
    model_file = write_onnx_model(tmp_path / "model.onnx")
    with pytest.raises(ModelConfigError, match="needs onnxruntime's CUDAExecutionProvider"):
        OnnxBackend(InstanceSpec(model_file, Placement("cuda:0"), {}, GPUS_WITHOUT_ORT_CUDA))


@pytest.mark.filterwarnings(
    "ignore:Specified provider 'CUDAExecutionProvider' is not in available:UserWarning"
)
def test_onnx_backend_refuses_a_session_that_fell_back_to_the_cpu(tmp_path: Path) -> None:
    # The inventory claims CUDA, this machine's onnxruntime has none: onnxruntime silently builds a CPU
    # session, which must not pass for a GPU instance.
    model_file = write_onnx_model(tmp_path / "model.onnx")
    with pytest.raises(ModelConfigError, match=f"{model_file}: CUDAExecutionProvider failed to initialise"):
        OnnxBackend(InstanceSpec(model_file, Placement("cuda:0"), {}, TWO_GPUS))


def test_torch_device_for_each_placement() -> None:
    assert torch_device(MODEL, Placement("cpu"), CPU_ONLY) == torch.device("cpu")
    assert torch_device(MODEL, Placement("cuda:1"), TWO_GPUS) == torch.device("cuda", 1)
    with pytest.raises(ModelConfigError, match="cuda:2 but 2 GPU"):
        torch_device(MODEL, Placement("cuda:2"), TWO_GPUS)


@pytest.mark.parametrize(
    ("precision", "device", "expected"),
    [
        ("fp32", "cuda:0", None),
        ("fp16", "cuda:0", torch.float16),
        ("FP16", "cuda:1", torch.float16),
        ("bf16", "cuda:0", torch.bfloat16),
        ("fp16", "cpu", None),
        ("bf16", "cpu", None),
    ],
)
def test_precision_applies_on_gpus_only(precision: str, device: str, expected: torch.dtype | None) -> None:
    assert compute_dtype(MODEL, {"precision": precision}, torch.device(device)) == expected
    assert compute_dtype(MODEL, {}, torch.device(device)) is None


def test_cudnn_benchmark_applies_on_gpus_only() -> None:
    assert cudnn_benchmark(MODEL, {"cudnn_benchmark": "true"}, torch.device("cuda:0"))
    assert not cudnn_benchmark(MODEL, {"cudnn_benchmark": "true"}, torch.device("cpu"))
    assert not cudnn_benchmark(MODEL, {}, torch.device("cuda:0"))
    with pytest.raises(ModelConfigError, match="cudnn_benchmark"):
        cudnn_benchmark(MODEL, {"cudnn_benchmark": "yes"}, torch.device("cuda:0"))
