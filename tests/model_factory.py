"""Tiny real models for tests, written with onnx.helper: fast to build, exact to check."""

from __future__ import annotations

from pathlib import Path

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
