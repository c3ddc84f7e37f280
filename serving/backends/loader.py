"""From a model's platform and file to a running backend instance.

The platforms, their aliases and model files are in serving/backends/platforms.py. TorchBackend picks
jit.load or export.load by the file's suffix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from serving.backends.base import Backend, InstanceSpec, Placement, TensorDecl
from serving.backends.devices import DeviceInventory
from serving.backends.platforms import ONNX, platform_name
from serving.errors import ModelConfigError


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
    max_batch_size: int = 0,
) -> Backend:
    """Load one instance of a model. Raises ModelConfigError (naming the file) when it cannot."""
    platform = platform_name(platform)
    instance = InstanceSpec(model_file, placement, parameters, inventory)
    if platform == ONNX:
        from serving.backends.onnx import OnnxBackend

        return OnnxBackend(instance)
    from serving.backends.torch import TorchBackend

    for name, dtype, _ in inputs:
        if np.dtype(dtype).kind not in "biufO":
            raise ModelConfigError(f"{model_file}: torch models cannot take {dtype} input {name!r}")
    return TorchBackend(instance, inputs, outputs, max_batch_size)
