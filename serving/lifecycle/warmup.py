"""Warm-up samples: Triton's `model_warmup`, or one built-in sample that fits the declared types.

Each sample is run `count` times on every instance before a version takes traffic (straight on the
backend, never through the batcher: like Triton, warm-up is not counted in the statistics). A sample
builds its inputs once, at load:

    zero_data        zeros; "" for BYTES
    random_data      deterministic (seeded) random values that fit the type; printable ASCII for BYTES
    input_data_file  the raw bytes of `<model>/warmup/<file>` (BYTES: Triton's serialized format, each
                     element a 4-byte little-endian length then its bytes), one row repeated batch_size times

Without `model_warmup` the built-in sample "zeros" feeds numeric zeros and, for BYTES, the text b"0":
an empty string breaks models that parse their text as numbers (Triton's `simple_string` casts STRING to
INT32, and "" cannot be cast), while "0" is valid text for a text model and a number for a parsing one.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from serving.errors import ModelConfigError
from serving.proto import model_config_pb2 as mc
from serving.types import CONFIG_TO_V2, V2_TO_NUMPY, Array


class DeclaredInput(Protocol):
    """What warm-up needs of a declared input (serving.lifecycle.repository.TensorSpec is one); a
    Protocol, so that the repository reader can import this module without a loop."""

    @property
    def name(self) -> str: ...
    @property
    def datatype(self) -> str: ...
    @property
    def dims(self) -> tuple[int, ...]: ...
    @property
    def optional(self) -> bool: ...


WARMUP_FOLDER = "warmup"
DEFAULT_SAMPLE = "zeros"
_PRINTABLE = np.frombuffer(
    (string.ascii_letters + string.digits + string.punctuation + " ").encode(), np.uint8
)


@dataclass(frozen=True)
class WarmupInput:
    name: str
    datatype: str
    batch: tuple[int, ...]  # (batch_size,) when the model batches, else ()
    dims: tuple[int, ...]  # one row
    data: str  # "zero" | "random" | "file" | "default"
    contents: bytes = b""  # the file's bytes for "file": one row

    @property
    def shape(self) -> tuple[int, ...]:
        return self.batch + self.dims

    def describe(self) -> str:
        return f"input '{self.name}' {self.datatype} {list(self.shape)}"


@dataclass(frozen=True)
class WarmupSample:
    name: str
    count: int
    inputs: tuple[WarmupInput, ...]

    def arrays(self) -> dict[str, Array]:
        return {i.name: _array(i, seed) for seed, i in enumerate(self.inputs)}

    def describe(self) -> str:
        return f"warm-up sample '{self.name}' ({', '.join(i.describe() for i in self.inputs)})"


def default_sample(inputs: tuple[DeclaredInput, ...], max_batch_size: int) -> WarmupSample:
    """One row of zeros ("0" for BYTES), -1 dims taken as 1."""
    batch = (1,) if max_batch_size > 0 else ()
    return WarmupSample(
        DEFAULT_SAMPLE,
        1,
        tuple(
            WarmupInput(t.name, t.datatype, batch, tuple(1 if d == -1 else d for d in t.dims), "default")
            for t in inputs
        ),
    )


def parse_warmup(
    config: mc.ModelConfig, inputs: tuple[DeclaredInput, ...], folder: Path, where: Path
) -> tuple[WarmupSample, ...]:
    """Validate `model_warmup`; an empty tuple when there is none."""
    samples = []
    for i, warmup in enumerate(config.model_warmup):
        field = f"model_warmup[{i}]"
        if not warmup.name:
            raise ModelConfigError(f"{where}: {field}.name is required")
        field = f"model_warmup[{i}] '{warmup.name}'"
        batch = _batch_dims(warmup.batch_size, config.max_batch_size, field, where)
        declared = {t.name: t for t in inputs}
        unknown = sorted(set(warmup.inputs) - set(declared))
        if unknown:
            raise ModelConfigError(f"{where}: {field}.inputs: {unknown} are not inputs of the model")
        missing = [t.name for t in inputs if t.name not in warmup.inputs and not t.optional]
        if missing:
            raise ModelConfigError(f"{where}: {field}.inputs: no data for required inputs {missing}")
        parsed = tuple(
            _input(warmup.inputs[name], declared[name], batch, folder, f"{field}.inputs['{name}']", where)
            for name in sorted(warmup.inputs)
        )
        samples.append(WarmupSample(warmup.name, max(int(warmup.count), 1), parsed))
    return tuple(samples)


def _batch_dims(batch_size: int, max_batch_size: int, field: str, where: Path) -> tuple[int, ...]:
    if max_batch_size == 0:
        if batch_size > 1:
            raise ModelConfigError(
                f"{where}: {field}.batch_size {batch_size}: the model does not batch (max_batch_size 0); "
                "use 0 or 1"
            )
        return ()
    if batch_size > max_batch_size:
        raise ModelConfigError(
            f"{where}: {field}.batch_size {batch_size} exceeds max_batch_size {max_batch_size}"
        )
    return (max(batch_size, 1),)


def _input(
    given: mc.ModelWarmup.Input,
    tensor: DeclaredInput,
    batch: tuple[int, ...],
    folder: Path,
    field: str,
    where: Path,
) -> WarmupInput:
    name = tensor.name
    datatype = CONFIG_TO_V2.get(mc.DataType.Name(given.data_type))
    if datatype != tensor.datatype:
        raise ModelConfigError(
            f"{where}: {field}.data_type {mc.DataType.Name(given.data_type)} does not match the input's "
            f"{tensor.datatype}"
        )
    dims = tuple(int(d) for d in given.dims)
    fits = len(dims) == len(tensor.dims) and all(
        d > 0 and c in (-1, d) for d, c in zip(dims, tensor.dims, strict=True)
    )
    if not fits:
        raise ModelConfigError(
            f"{where}: {field}.dims {list(dims)} do not fit the input's dims {list(tensor.dims)}"
        )
    choice = given.WhichOneof("input_data_type")
    if choice is None or (choice in ("zero_data", "random_data") and not getattr(given, choice)):
        raise ModelConfigError(f"{where}: {field}: set one of zero_data, random_data or input_data_file")
    if choice != "input_data_file":
        return WarmupInput(name, datatype, batch, dims, choice.removesuffix("_data"))
    contents = _read_file(folder, given.input_data_file, f"{field}.input_data_file", where)
    _check_contents(contents, datatype, dims, f"{field}.input_data_file", where)
    return WarmupInput(name, datatype, batch, dims, "file", contents)


def _read_file(folder: Path, name: str, field: str, where: Path) -> bytes:
    base = (folder / WARMUP_FOLDER).resolve()
    path = (base / name).resolve()
    if not name or not path.is_relative_to(base):
        raise ModelConfigError(f"{where}: {field} '{name}' must name a file inside {base}")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ModelConfigError(f"{where}: {field} '{name}': cannot read {path}: {exc.strerror}") from None


def _check_contents(contents: bytes, datatype: str, dims: tuple[int, ...], field: str, where: Path) -> None:
    count = int(np.prod(dims))
    if datatype == "BYTES":
        try:
            found = len(deserialize_bytes(contents))
        except ValueError as exc:
            raise ModelConfigError(f"{where}: {field}: {exc}") from None
        if found != count:
            raise ModelConfigError(f"{where}: {field} holds {found} strings, dims {list(dims)} need {count}")
        return
    expected = count * V2_TO_NUMPY[datatype].itemsize
    if len(contents) != expected:
        raise ModelConfigError(
            f"{where}: {field} holds {len(contents)} bytes, {datatype} {list(dims)} needs {expected}"
        )


def deserialize_bytes(contents: bytes) -> list[bytes]:
    """Triton's serialized BYTES tensor: each element is a 4-byte little-endian length, then its bytes."""
    items: list[bytes] = []
    offset = 0
    while offset < len(contents):
        if offset + 4 > len(contents):
            raise ValueError(f"truncated length prefix at byte {offset}")
        size = int.from_bytes(contents[offset : offset + 4], "little")
        offset += 4
        if offset + size > len(contents):
            left = len(contents) - offset
            raise ValueError(f"element {len(items)} claims {size} bytes, only {left} remain")
        items.append(contents[offset : offset + size])
        offset += size
    return items


def _array(given: WarmupInput, seed: int) -> Array:
    shape, datatype = given.shape, given.datatype
    if datatype == "BYTES":
        return _strings(given, seed)
    dtype: np.dtype[Any] = V2_TO_NUMPY[datatype]
    if given.data == "file":
        row = np.frombuffer(given.contents, dtype=dtype).reshape(given.dims)
        return np.ascontiguousarray(np.broadcast_to(row, shape))
    if given.data == "random":
        rng = np.random.default_rng(seed)
        if dtype.kind == "f":
            return rng.random(shape).astype(dtype)
        if dtype.kind == "b":
            return rng.integers(0, 2, shape).astype(dtype)
        return rng.integers(0, min(np.iinfo(dtype).max, 100) + 1, shape).astype(dtype)
    return np.zeros(shape, dtype=dtype)


def _strings(given: WarmupInput, seed: int) -> Array:
    array: Any = np.empty(given.shape, dtype=object)
    if given.data == "file":
        items = deserialize_bytes(given.contents)
        row = np.empty(len(items), dtype=object)
        row[:] = items
        array[...] = row.reshape(given.dims)
    elif given.data == "random":
        rng = np.random.default_rng(seed)
        flat = array.reshape(-1)
        for i in range(flat.size):
            flat[i] = _PRINTABLE[rng.integers(0, len(_PRINTABLE), int(rng.integers(1, 9)))].tobytes()
    else:
        array.fill(b"" if given.data == "zero" else b"0")
    return np.asarray(array)
