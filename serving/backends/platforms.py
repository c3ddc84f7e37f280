"""The platforms the server runs, the one table of their names, aliases, model files and suffixes.

    platform (config.pbtxt)  Triton `backend:` alias  default file  suffix  backend
    onnxruntime_onnx         onnxruntime              model.onnx    .onnx   OnnxBackend
    pytorch_libtorch         pytorch                  model.pt      .pt     TorchBackend (TorchScript)
    torch_export             torch_export             model.pt2     .pt2    TorchBackend (torch.export)

The repository reader (serving/lifecycle/repository.py) and the backend loader both read this table.
"""

from __future__ import annotations

from serving.errors import ModelConfigError

ONNX = "onnxruntime_onnx"
TORCHSCRIPT = "pytorch_libtorch"
TORCH_EXPORT = "torch_export"

# Platform → the file a version folder holds by default (in the order a version folder is searched).
MODEL_FILENAMES: dict[str, str] = {ONNX: "model.onnx", TORCHSCRIPT: "model.pt", TORCH_EXPORT: "model.pt2"}
# Triton `backend:` names accepted as aliases of a platform.
BACKEND_ALIASES: dict[str, str] = {"onnxruntime": ONNX, "pytorch": TORCHSCRIPT, "torch_export": TORCH_EXPORT}
# A model file's suffix → the platform that runs it (when config.pbtxt names no platform).
SUFFIX_PLATFORMS: dict[str, str] = {".onnx": ONNX, ".pt": TORCHSCRIPT, ".pt2": TORCH_EXPORT}


def platform_name(name: str) -> str:
    """The canonical platform for a config `platform` or Triton `backend` name."""
    platform = BACKEND_ALIASES.get(name, name)
    if platform not in MODEL_FILENAMES:
        known = sorted({*MODEL_FILENAMES, *BACKEND_ALIASES})
        raise ModelConfigError(f"unknown platform or backend {name!r}; known: {known}")
    return platform
