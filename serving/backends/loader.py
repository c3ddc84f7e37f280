"""From a model's platform and file to a running backend instance.

Platforms (config.pbtxt `platform`) and their default model file inside a version folder:

    onnxruntime_onnx   model.onnx   OnnxBackend
    pytorch_libtorch   model.pt     TorchBackend (TorchScript)
    torch_export       model.pt2    TorchBackend (torch.export)

Triton's `backend:` field names are accepted as aliases: "onnxruntime" → onnxruntime_onnx and
"pytorch" → pytorch_libtorch. TorchBackend picks jit.load or export.load by the file's suffix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from serving.backends.base import Backend, Placement
from serving.backends.devices import DeviceInventory
from serving.errors import ModelConfigError

ONNX = "onnxruntime_onnx"
TORCHSCRIPT = "pytorch_libtorch"
TORCH_EXPORT = "torch_export"

MODEL_FILENAMES = {ONNX: "model.onnx", TORCHSCRIPT: "model.pt", TORCH_EXPORT: "model.pt2"}
PLATFORM_ALIASES = {"onnxruntime": ONNX, "pytorch": TORCHSCRIPT}
_SUFFIX_TO_PLATFORM = {".onnx": ONNX, ".pt": TORCHSCRIPT, ".pt2": TORCH_EXPORT}

TensorDecl = tuple[str, np.dtype[Any]]  # (name, numpy dtype) of a config input or output


def platform_name(name: str) -> str:
    """The canonical platform for a config `platform` or Triton `backend` name."""
    platform = PLATFORM_ALIASES.get(name, name)
    if platform not in MODEL_FILENAMES:
        known = sorted([*MODEL_FILENAMES, *PLATFORM_ALIASES])
        raise ModelConfigError(f"unknown platform or backend {name!r}; known: {known}")
    return platform


def backend_for(model_file: Path) -> str:
    """The platform that runs a model file, by its suffix."""
    try:
        return _SUFFIX_TO_PLATFORM[model_file.suffix]
    except KeyError:
        raise ModelConfigError(
            f"{model_file}: no backend for suffix {model_file.suffix!r}; known: {sorted(_SUFFIX_TO_PLATFORM)}"
        ) from None


def gpu_capable(platform: str, inventory: DeviceInventory) -> bool:
    """Whether the platform can use the inventory's GPUs (pass to plan_placements)."""
    if inventory.gpu_count == 0:
        return False
    return inventory.ort_has_cuda if platform_name(platform) == ONNX else True


def create_backend(
    platform: str,
    model_file: Path,
    placement: Placement,
    parameters: Mapping[str, str],
    inventory: DeviceInventory,
    inputs: Sequence[TensorDecl],
    outputs: Sequence[TensorDecl],
) -> Backend:
    """Load one instance of a model. Raises ModelConfigError (naming the file) when it cannot."""
    platform = platform_name(platform)
    if platform == ONNX:
        from serving.backends.onnx import OnnxBackend

        return OnnxBackend(model_file, placement, parameters, inventory)
    from serving.backends.torch import TorchBackend

    for name, dtype in inputs:
        if np.dtype(dtype).kind not in "biuf":
            raise ModelConfigError(f"{model_file}: torch models cannot take {dtype} input {name!r}")
    return TorchBackend(
        model_file,
        placement,
        parameters,
        inventory,
        input_names=[name for name, _ in inputs],
        output_names=[name for name, _ in outputs],
        output_dtypes=dict(outputs),
    )
