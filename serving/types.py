"""Shared type aliases and the datatype tables (KServe v2 names ⇄ Triton config enums ⇄ numpy)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from serving.errors import InvalidInput

Array = npt.NDArray[Any]
TensorMap = Mapping[str, Array]

# KServe v2 datatype string → numpy dtype. BYTES is a numpy object array of `bytes`.
V2_TO_NUMPY: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}

# Triton config enum name (model_config.proto DataType) → KServe v2 datatype string.
CONFIG_TO_V2: dict[str, str] = {
    "TYPE_BOOL": "BOOL",
    "TYPE_UINT8": "UINT8",
    "TYPE_UINT16": "UINT16",
    "TYPE_UINT32": "UINT32",
    "TYPE_UINT64": "UINT64",
    "TYPE_INT8": "INT8",
    "TYPE_INT16": "INT16",
    "TYPE_INT32": "INT32",
    "TYPE_INT64": "INT64",
    "TYPE_FP16": "FP16",
    "TYPE_FP32": "FP32",
    "TYPE_FP64": "FP64",
    "TYPE_STRING": "BYTES",
}


def decode_utf8(name: str, index: int, item: object) -> str:
    """One BYTES element as text; InvalidInput naming the input and the element when it is not UTF-8.
    Our backends hold strings as text (onnxruntime string tensors, TorchScript `List[str]`), so bytes that
    are not UTF-8 cannot reach a model unaltered: they are refused instead."""
    if isinstance(item, str):
        return item
    if not isinstance(item, bytes | bytearray | memoryview):
        raise InvalidInput(f"input '{name}' element {index}: expected bytes, got {type(item).__name__}")
    try:
        return bytes(item).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"input '{name}' element {index} is not valid UTF-8 (byte 0x{bytes(item)[exc.start]:02x} at "
            f"offset {exc.start}); string tensors of onnxruntime and PyTorch models carry UTF-8 text"
        ) from None


def utf8_texts(name: str, array: Array) -> list[str]:
    """A BYTES tensor's elements as text, flattened in row-major order (decode_utf8 on each)."""
    return [decode_utf8(name, index, item) for index, item in enumerate(array.reshape(-1))]


def utf8_bytes(items: Iterable[object]) -> Array:
    """Text elements (str, or bytes already) as a 1-D BYTES array: an object array of UTF-8 `bytes`."""
    encoded = [_utf8(item) for item in items]
    data = np.empty(len(encoded), dtype=object)
    data[:] = encoded
    return data


def _utf8(item: object) -> bytes:
    if isinstance(item, str):
        return item.encode("utf-8")
    if isinstance(item, bytes | bytearray | memoryview):
        return bytes(item)
    raise TypeError(f"a string element must be str or bytes, got {type(item).__name__}")


_NUMPY_TO_V2: dict[np.dtype[Any], str] = {dtype: name for name, dtype in V2_TO_NUMPY.items()}


def numpy_to_v2(dtype: np.dtype[Any]) -> str:
    """The KServe v2 datatype name of a numpy dtype."""
    name = _NUMPY_TO_V2.get(dtype)
    if name is not None and name != "BYTES":
        return name
    if dtype.kind in ("O", "S", "U"):
        return "BYTES"
    for name, candidate in V2_TO_NUMPY.items():  # equal but not hashed alike (e.g. another byte order)
        if candidate == dtype:
            return name
    raise ValueError(f"no KServe v2 datatype for numpy dtype {dtype}")
