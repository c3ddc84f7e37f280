"""Builds the ``resnet50`` model (architecture in resnet50.py): a throughput benchmark.

    version 1  ONNX         torch.onnx.export (dynamo exporter), opset 20, one self-contained file
    version 2  TorchScript  torch.jit.script, so the input cast follows the weights after .half()

Input ``images`` uint8 [N, 3, 224, 224] (dynamic N), output ``logits`` [N, 1000]. The build checks
each saved file at batch sizes 1 and 3 against the eager module, and that the TorchScript file still
runs after a dtype change.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch
from resnet50 import seeded_resnet50
from torch import Tensor, nn

SEED = 0
IMAGE_SHAPE = (3, 224, 224)
INPUT_NAME = "images"
OUTPUT_NAME = "logits"
ONNX_OPSET = 20
MAX_BATCH = 1024
CHECK_BATCHES = (1, 3)
RELATIVE_TOLERANCE = 1e-3


def example_images(batch: int, seed: int = SEED) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, *IMAGE_SHAPE), generator=generator).to(torch.uint8)


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(actual - expected).max() / max(float(np.abs(expected).max()), 1e-12))


@contextmanager
def quiet_exporter() -> Iterator[None]:
    """Silence the exporter's notes that do not concern us (missing torchvision ops, deprecations)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=FutureWarning)
            warnings.simplefilter("ignore", category=DeprecationWarning)
            yield
    finally:
        logger.setLevel(level)


def export_onnx(model: nn.Module, path: Path) -> None:
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    with quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(
            model,
            (example_images(2),),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=ONNX_OPSET,
            dynamic_shapes={"images": {0: batch}},
            external_data=False,
            verbose=False,
        )
    if program is None:
        raise RuntimeError("torch.onnx.export returned no program")
    proto = program.model_proto
    proto.doc_string = "resnet50 v1: seeded random weights, uint8 images normalised inside the graph"
    # One self-contained file: ~100 MB of weights is well under protobuf's 2 GB limit.
    onnx.save(proto, str(path), save_as_external_data=False)


def check_onnx(path: Path, model: nn.Module) -> None:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    if [i.name for i in session.get_inputs()] != [INPUT_NAME]:
        raise RuntimeError(f"{path}: inputs {[i.name for i in session.get_inputs()]}")
    if [o.name for o in session.get_outputs()] != [OUTPUT_NAME]:
        raise RuntimeError(f"{path}: outputs {[o.name for o in session.get_outputs()]}")
    for batch in CHECK_BATCHES:
        images = example_images(batch, seed=SEED + batch)
        with torch.inference_mode():
            expected = model(images).numpy()
        actual = session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})[0]
        check_logits(path, batch, actual, expected)


def check_logits(path: Path, batch: int, actual: np.ndarray, expected: np.ndarray) -> None:
    if actual.shape != (batch, 1000):
        raise RuntimeError(f"{path}: batch {batch} gave shape {actual.shape}")
    error = relative_error(actual.astype(np.float32), expected)
    if error > RELATIVE_TOLERANCE:
        raise RuntimeError(f"{path}: batch {batch} differs from eager torch by {error:.2e} (relative)")


def export_torchscript(model: nn.Module, path: Path) -> None:
    torch.jit.save(torch.jit.script(model), str(path))


def check_torchscript(path: Path, model: nn.Module) -> None:
    module = torch.jit.load(str(path), map_location="cpu").eval()  # type: ignore[no-untyped-call]
    with torch.inference_mode():
        for batch in CHECK_BATCHES:
            images = example_images(batch, seed=SEED + batch)
            check_logits(path, batch, module(images).numpy(), model(images).numpy())
        # The cast inside forward must follow the weights (the server runs this file in fp16 on GPU);
        # bfloat16 is the reduced precision every CPU build of torch runs.
        logits = module.to(torch.bfloat16)(example_images(1))
    if logits.dtype != torch.bfloat16 or not bool(torch.isfinite(logits).all()):
        raise RuntimeError(f"{path}: after .to(bfloat16) forward gave {logits.dtype}, or non-finite")


def build_resnet50(model_dir: Path) -> str:
    """Write 1/model.onnx and 2/model.pt under ``model_dir``; return a summary."""
    model = seeded_resnet50(seed=SEED)
    onnx_path = model_dir / "1" / "model.onnx"
    script_path = model_dir / "2" / "model.pt"
    for path in (onnx_path, script_path):
        path.parent.mkdir(parents=True, exist_ok=True)
    export_onnx(model, onnx_path)
    check_onnx(onnx_path, model)
    export_torchscript(model, script_path)
    check_torchscript(script_path, model)
    size_mb = {path.parent.name: path.stat().st_size / 1e6 for path in (onnx_path, script_path)}
    return (
        f"v1 onnx opset {ONNX_OPSET} {size_mb['1']:.0f} MB, v2 torchscript {size_mb['2']:.0f} MB,"
        f" batches {list(CHECK_BATCHES)} match eager torch within {RELATIVE_TOLERANCE:g}"
    )
