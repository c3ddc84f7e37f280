"""Which devices this process can use, and where a model's instances go (Triton's instance_group).

Device detection happens once, in `detect_inventory()`, and its result (`DeviceInventory`) is passed to
everything that decides placement. Every GPU decision is therefore a pure function of an inventory, and
tests exercise the GPU branches on a CPU-only machine with a hand-made inventory.

instance_group semantics (as in Triton's model_config.proto):

    KIND_CPU   count instances on the CPU; listing gpus is a config error
    KIND_GPU   count instances on EACH listed gpu (every visible GPU when gpus is empty);
               no visible GPU, an out-of-range or a repeated gpu index is a config error
    KIND_AUTO  like KIND_GPU when a usable GPU is visible, else count instances on the CPU
    count 0    means 1 (Triton's default)

A config with several instance groups concatenates the placements of each group (the caller's job).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from serving.errors import ModelConfigError

logger = logging.getLogger("serving.backends")

KIND_AUTO = "KIND_AUTO"
KIND_GPU = "KIND_GPU"
KIND_CPU = "KIND_CPU"
INSTANCE_KINDS = (KIND_AUTO, KIND_GPU, KIND_CPU)


@dataclass(frozen=True)
class Placement:
    """Where one model instance runs: 'cpu' or 'cuda:N'."""

    device: str

    @property
    def is_gpu(self) -> bool:
        return self.device.startswith("cuda")


CPU = Placement("cpu")


@dataclass(frozen=True)
class DeviceInventory:
    """What this process can run on: the CUDA devices torch sees and the providers onnxruntime has."""

    gpu_count: int
    ort_providers: tuple[str, ...]

    @property
    def ort_has_cuda(self) -> bool:
        return "CUDAExecutionProvider" in self.ort_providers


def detect_inventory() -> DeviceInventory:
    """Look at the machine once. A missing or broken CUDA install reads as zero GPUs, never a crash.

    The GPU count comes from torch (it honours CUDA_VISIBLE_DEVICES and does not create a CUDA context,
    so a process that forks workers afterwards stays fork-safe). With a CPU build of torch the count is
    0 even on a GPU host; such a deployment can build its DeviceInventory by hand.
    """
    return DeviceInventory(gpu_count=_torch_gpu_count(), ort_providers=_ort_providers_available())


def _torch_gpu_count() -> int:
    try:
        import torch

        return int(torch.cuda.device_count())
    except Exception as exc:  # a broken driver or CUDA install must not stop a CPU-only server
        logger.warning("cannot count CUDA devices, assuming none: %s", exc)
        return 0


def _ort_providers_available() -> tuple[str, ...]:
    try:
        import onnxruntime

        return tuple(str(name) for name in onnxruntime.get_available_providers())
    except Exception as exc:
        logger.warning("cannot list onnxruntime providers, assuming CPU only: %s", exc)
        return ("CPUExecutionProvider",)


def gpu_index(placement: Placement) -> int:
    """The CUDA device index of a 'cuda' or 'cuda:N' placement."""
    if not placement.is_gpu:
        raise ValueError(f"placement {placement.device!r} is not a GPU")
    _, _, index = placement.device.partition(":")
    return int(index) if index else 0


def plan_placements(
    kind: str,
    count: int,
    gpus: Sequence[int],
    inventory: DeviceInventory,
    *,
    gpu_capable: bool = True,
) -> list[Placement]:
    """The placements of one instance group, in order (per listed GPU, `count` instances each).

    `gpu_capable` is False when the model's backend cannot use the visible GPUs (e.g. onnxruntime
    without CUDAExecutionProvider): KIND_AUTO then falls back to the CPU and KIND_GPU is an error.
    """
    if kind not in INSTANCE_KINDS:
        raise ModelConfigError(f"instance_group kind {kind!r} is not one of {list(INSTANCE_KINDS)}")
    if count < 0:
        raise ModelConfigError(f"instance_group count must not be negative, got {count}")
    per_device = count or 1
    if kind == KIND_CPU:
        if gpus:
            raise ModelConfigError(f"instance_group kind KIND_CPU cannot list gpus {list(gpus)}")
        return [CPU] * per_device
    usable = inventory.gpu_count if gpu_capable else 0
    if kind == KIND_AUTO and usable == 0:
        logger.info("instance_group KIND_AUTO: no usable GPU, placing %d instance(s) on the CPU", per_device)
        return [CPU] * per_device
    return _gpu_placements(per_device, gpus, usable, inventory)


def _gpu_placements(
    per_device: int, gpus: Sequence[int], usable: int, inventory: DeviceInventory
) -> list[Placement]:
    if usable == 0:
        raise ModelConfigError(_no_gpu_message(inventory))
    chosen = list(gpus) if gpus else list(range(usable))
    bad = [index for index in chosen if not 0 <= index < usable]
    if bad:
        raise ModelConfigError(
            f"instance_group gpus {bad} out of range: {usable} GPU(s) visible (indices 0..{usable - 1})"
        )
    if len(set(chosen)) != len(chosen):
        raise ModelConfigError(f"instance_group gpus {chosen} lists a GPU more than once")
    return [Placement(f"cuda:{index}") for index in chosen for _ in range(per_device)]


def _no_gpu_message(inventory: DeviceInventory) -> str:
    if inventory.gpu_count == 0:
        return "instance_group kind KIND_GPU but no GPU is visible"
    return (
        f"instance_group kind KIND_GPU but this model's backend cannot use the {inventory.gpu_count} "
        f"visible GPU(s) (onnxruntime providers: {list(inventory.ort_providers)})"
    )
