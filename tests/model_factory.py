"""Tiny real models for tests, written with onnx.helper: fast to build, exact to check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper


def write_add_model(path: Path, width: int = 4, addend: float = 1.0) -> None:
    """ONNX: y = x + addend, x and y FP32 [batch, width]."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, width])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, width])
    constant = helper.make_tensor("addend", TensorProto.FLOAT, [1], [addend])
    node = helper.make_node("Add", ["x", "addend"], ["y"])
    graph = helper.make_graph([node], "add", [x], [y], initializer=[constant])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def add_model_config(
    name: str,
    width: int = 4,
    max_batch_size: int = 8,
    batching: str = "dynamic_batching { }",
    extra: str = "",
) -> str:
    return f"""
name: "{name}"
max_batch_size: {max_batch_size}
version_policy: {{ all {{}} }}
input [ {{ name: "x" data_type: TYPE_FP32 dims: [ {width} ] }} ]
output [ {{ name: "y" data_type: TYPE_FP32 dims: [ {width} ] }} ]
{batching}
{extra}
"""


def write_add_repository(
    root: Path, name: str = "add", versions: tuple[int, ...] = (1,), config: str | None = None, width: int = 4
) -> Path:
    """A repository with one add model; version N adds N."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.pbtxt").write_text(config if config is not None else add_model_config(name, width))
    for version in versions:
        write_add_model(folder / str(version) / "model.onnx", width, float(version))
    return root


def write_string_identity_model(path: Path) -> None:
    """ONNX: y = Identity(x), x and y STRING [batch, 1]: what goes in must come out byte for byte."""
    x = helper.make_tensor_value_info("x", TensorProto.STRING, [None, 1])
    y = helper.make_tensor_value_info("y", TensorProto.STRING, [None, 1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "strings", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


STRING_IDENTITY_CONFIG = """
name: "strings"
max_batch_size: 8
input [ { name: "x" data_type: TYPE_STRING dims: [ 1 ] } ]
output [ { name: "y" data_type: TYPE_STRING dims: [ 1 ] } ]
dynamic_batching { max_queue_delay_microseconds: 20000 }
"""


def write_simple_string_model(path: Path, width: int = 16) -> None:
    """ONNX after Triton's `simple_string`: STRING INPUT0, INPUT1 [batch, width] cast to INT32;
    OUTPUT0 = INPUT0 + INPUT1 and OUTPUT1 = INPUT0 - INPUT1, cast back to STRING."""
    inputs = [
        helper.make_tensor_value_info(n, TensorProto.STRING, [None, width]) for n in ("INPUT0", "INPUT1")
    ]
    outputs = [
        helper.make_tensor_value_info(n, TensorProto.STRING, [None, width]) for n in ("OUTPUT0", "OUTPUT1")
    ]
    nodes = [
        helper.make_node("Cast", ["INPUT0"], ["a"], to=TensorProto.INT32),
        helper.make_node("Cast", ["INPUT1"], ["b"], to=TensorProto.INT32),
        helper.make_node("Add", ["a", "b"], ["sum"]),
        helper.make_node("Sub", ["a", "b"], ["diff"]),
        helper.make_node("Cast", ["sum"], ["OUTPUT0"], to=TensorProto.STRING),
        helper.make_node("Cast", ["diff"], ["OUTPUT1"], to=TensorProto.STRING),
    ]
    _save(helper.make_graph(nodes, "simple_string", inputs, outputs), path)


def simple_string_config(name: str = "simple_string", width: int = 16, extra: str = "") -> str:
    """Triton's simple_string config.pbtxt (its dims are [16]), plus `extra`."""
    return f"""
name: "{name}"
max_batch_size: 8
input [ {{ name: "INPUT0" data_type: TYPE_STRING dims: [ {width} ] }},
        {{ name: "INPUT1" data_type: TYPE_STRING dims: [ {width} ] }} ]
output [ {{ name: "OUTPUT0" data_type: TYPE_STRING dims: [ {width} ] }},
         {{ name: "OUTPUT1" data_type: TYPE_STRING dims: [ {width} ] }} ]
{extra}
"""


def densenet_like_weights(classes: int = 1000, channels: int = 3) -> np.ndarray:
    """The 1x1 convolution's weights of write_densenet_like_model: W[k, c] = (k + 1) * (c - 1) / 100."""
    k = np.arange(classes, dtype=np.float32)[:, None] + 1
    c = np.arange(channels, dtype=np.float32)[None, :] - 1
    return (k * c / 100).astype(np.float32)


def write_densenet_like_model(path: Path, classes: int = 1000, channels: int = 3, side: int = 4) -> None:
    """ONNX shaped like Triton's densenet_onnx: data_0 [1, C, H, W] → 1x1 Conv → GlobalAveragePool →
    fc6_1 [1, classes, 1, 1] (its config says dims [classes] with `reshape`)."""
    x = helper.make_tensor_value_info("data_0", TensorProto.FLOAT, [1, channels, side, side])
    y = helper.make_tensor_value_info("fc6_1", TensorProto.FLOAT, [1, classes, 1, 1])
    weights = densenet_like_weights(classes, channels).reshape(classes, channels, 1, 1)
    w = helper.make_tensor("w", TensorProto.FLOAT, list(weights.shape), weights.reshape(-1).tolist())
    nodes = [
        helper.make_node("Conv", ["data_0", "w"], ["conv"]),
        helper.make_node("GlobalAveragePool", ["conv"], ["fc6_1"]),
    ]
    _save(helper.make_graph(nodes, "densenet_like", [x], [y], initializer=[w]), path)


DENSENET_LIKE_CONFIG = """
name: "densenet_onnx"
platform: "onnxruntime_onnx"
max_batch_size: 0
input [ { name: "data_0" data_type: TYPE_FP32 format: FORMAT_NCHW dims: [ 3, 4, 4 ]
          reshape { shape: [ 1, 3, 4, 4 ] } } ]
output [ { name: "fc6_1" data_type: TYPE_FP32 dims: [ 1000 ] reshape { shape: [ 1, 1000, 1, 1 ] }
           label_filename: "densenet_labels.txt" } ]
"""


def _save(graph: onnx.GraphProto, path: Path) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
