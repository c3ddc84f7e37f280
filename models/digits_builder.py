"""Builds the ``digits`` model: two versions of an 8x8 handwritten-digit classifier.

    version 1  ONNX         scikit-learn StandardScaler + LogisticRegression, via skl2onnx
    version 2  TorchScript  PyTorch MLP with the standardisation inside the module

Both take ``input`` float32 [N, 64] (raw pixel values 0-16) and return ``probabilities`` float32
[N, 10]. Each version is scored in-process from its saved file; ``accuracy.json`` records the score
and ``reference.json`` the distribution of its predictions on the test split (the drift reference).
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime
import torch
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from torch import Tensor, nn

SEED = 0
N_FEATURES = 64
N_CLASSES = 10
MIN_ACCURACY = 0.95
INPUT_NAME = "input"
OUTPUT_NAME = "probabilities"
ONNX_OPSETS = {"": 18, "ai.onnx.ml": 3}
CONFIDENCE_EDGES = [round(i / 10, 1) for i in range(11)]

Floats = npt.NDArray[np.float32]
Labels = npt.NDArray[np.int64]


@dataclass(frozen=True)
class DigitsSplit:
    x_train: Floats
    x_test: Floats
    y_train: Labels
    y_test: Labels


def load_split() -> DigitsSplit:
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x.astype(np.float32), y.astype(np.int64), test_size=0.25, random_state=SEED, stratify=y
    )
    return DigitsSplit(x_train, x_test, y_train, y_test)


# --- version 1: scikit-learn -> ONNX -------------------------------------------------------------


def train_sklearn(split: DigitsSplit) -> Pipeline:
    classifier = LogisticRegression(C=0.1, max_iter=1000, random_state=SEED)
    pipeline = Pipeline([("scale", StandardScaler()), ("classify", classifier)])
    return pipeline.fit(split.x_train, split.y_train)


def keep_outputs(graph: onnx.GraphProto, names: set[str]) -> None:
    """Drop every graph output not in ``names`` and every node that no kept output depends on."""
    kept = [output for output in graph.output if output.name in names]
    del graph.output[:]
    graph.output.extend(kept)
    needed = set(names)
    live: list[onnx.NodeProto] = []
    for node in reversed(graph.node):
        if needed.intersection(node.output):
            live.append(node)
            needed.update(node.input)
    del graph.node[:]
    graph.node.extend(reversed(live))


def name_batch_axis(value: onnx.ValueInfoProto) -> None:
    value.type.tensor_type.shape.dim[0].dim_param = "batch"


def sklearn_to_onnx(pipeline: Pipeline) -> onnx.ModelProto:
    """Convert with ZipMap off, then keep only the probabilities (skl2onnx also emits ``label``)."""
    classifier = pipeline.named_steps["classify"]
    model: onnx.ModelProto = convert_sklearn(
        pipeline,
        initial_types=[(INPUT_NAME, FloatTensorType([None, N_FEATURES]))],
        options={id(classifier): {"zipmap": False}},
        target_opset=ONNX_OPSETS,
    )
    keep_outputs(model.graph, {OUTPUT_NAME})
    name_batch_axis(model.graph.input[0])
    name_batch_axis(model.graph.output[0])
    model.graph.name = "digits_v1"  # skl2onnx names the graph with a random uuid
    model.doc_string = "digits v1: StandardScaler + LogisticRegression (scikit-learn), raw pixels 0-16"
    onnx.checker.check_model(model, full_check=True)
    return model


def predict_onnx(path: Path, x: Floats) -> Floats:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    if [i.name for i in session.get_inputs()] != [INPUT_NAME] or names != [OUTPUT_NAME]:
        raise RuntimeError(f"{path}: expected one input {INPUT_NAME!r} and one output {OUTPUT_NAME!r}")
    result: Floats = session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
    return result


# --- version 2: PyTorch MLP -> TorchScript -------------------------------------------------------


class DigitsMLP(nn.Module):
    """Raw pixels [N, 64] -> standardise (buffers) -> 64-128-64-10 MLP -> softmax [N, 10]."""

    # Buffers. No `from __future__ import annotations` in this file: TorchScript reads these.
    mean: Tensor
    std: Tensor

    def __init__(self, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.reshape(1, N_FEATURES).clone())
        self.register_buffer("std", std.reshape(1, N_FEATURES).clamp(min=1.0))
        self.layers = nn.Sequential(
            nn.Linear(N_FEATURES, 128),
            nn.ReLU(),
            nn.Linear(128, 64),
            nn.ReLU(),
            nn.Linear(64, N_CLASSES),
        )

    def logits(self, x: Tensor) -> Tensor:
        logits: Tensor = self.layers((x - self.mean) / self.std)
        return logits

    def forward(self, x: Tensor) -> Tensor:
        return torch.softmax(self.logits(x), dim=1)


def train_torch(split: DigitsSplit, epochs: int = 40, batch_size: int = 64, seed: int = SEED) -> DigitsMLP:
    torch.manual_seed(seed)
    x, y = torch.from_numpy(split.x_train), torch.from_numpy(split.y_train)
    model = DigitsMLP(x.mean(dim=0), x.std(dim=0))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    shuffle = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(x), generator=shuffle).split(batch_size):  # type: ignore[no-untyped-call]
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model.logits(x[batch]), y[batch])
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
    return model.eval()


def predict_torchscript(path: Path, x: Floats) -> Floats:
    module = torch.jit.load(str(path), map_location="cpu").eval()  # type: ignore[no-untyped-call]
    with torch.inference_mode():
        result: Floats = module(torch.from_numpy(x)).numpy()
    return result


# --- evaluation and the drift reference ----------------------------------------------------------


def reference_distribution(probabilities: Floats) -> dict[str, Any]:
    """Predicted-class counts and a histogram of the top-class confidence, for drift detection."""
    predicted = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1)
    hist, _ = np.histogram(np.clip(confidence, 0.0, 1.0), bins=np.array(CONFIDENCE_EDGES))
    return {
        "output": OUTPUT_NAME,
        "kind": "classification",
        "class_counts": np.bincount(predicted, minlength=N_CLASSES).astype(int).tolist(),
        "confidence_hist": {"edges": CONFIDENCE_EDGES, "counts": hist.astype(int).tolist()},
        "n": int(len(probabilities)),
    }


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=2) + "\n")


def evaluate_version(version_dir: Path, probabilities: Floats, y_test: Labels, framework: str) -> float:
    """Write accuracy.json and reference.json; raise if the version misses MIN_ACCURACY."""
    if probabilities.shape != (len(y_test), N_CLASSES) or probabilities.dtype != np.float32:
        raise RuntimeError(f"{version_dir}: bad output {probabilities.dtype} {probabilities.shape}")
    accuracy = float((probabilities.argmax(axis=1) == y_test).mean())
    if accuracy < MIN_ACCURACY:
        raise RuntimeError(f"{version_dir}: accuracy {accuracy:.4f} < {MIN_ACCURACY}")
    write_json(
        version_dir / "accuracy.json",
        {"accuracy": accuracy, "n_test": int(len(y_test)), "framework": framework},
    )
    write_json(version_dir / "reference.json", reference_distribution(probabilities))
    return accuracy


def build_onnx_version(version_dir: Path, split: DigitsSplit) -> float:
    version_dir.mkdir(parents=True, exist_ok=True)
    path = version_dir / "model.onnx"
    onnx.save(sklearn_to_onnx(train_sklearn(split)), str(path))
    return evaluate_version(version_dir, predict_onnx(path, split.x_test), split.y_test, "onnxruntime")


def build_torchscript_version(version_dir: Path, split: DigitsSplit) -> float:
    version_dir.mkdir(parents=True, exist_ok=True)
    path = version_dir / "model.pt"
    torch.jit.save(torch.jit.script(train_torch(split)), str(path))
    probabilities = predict_torchscript(path, split.x_test)
    return evaluate_version(version_dir, probabilities, split.y_test, "torchscript")


def build_digits(model_dir: Path) -> str:
    """Write test_set.npz, 1/ (ONNX) and 2/ (TorchScript) under ``model_dir``; return a summary."""
    split = load_split()
    np.savez(model_dir / "test_set.npz", X_test=split.x_test, y_test=split.y_test)
    onnx_accuracy = build_onnx_version(model_dir / "1", split)
    torch_accuracy = build_torchscript_version(model_dir / "2", split)
    return (
        f"v1 onnx accuracy {onnx_accuracy:.4f}, v2 torchscript accuracy {torch_accuracy:.4f}"
        f" (n_test={len(split.y_test)})"
    )
