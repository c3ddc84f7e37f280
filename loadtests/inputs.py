"""Request inputs: random tensors from model metadata, arrays from .npy/.npz, or the model's sample data.

Sources (``--inputs``):

    random          (default) random values of each input's datatype and shape, from ModelMetadata
    PATH.npy        one array for a one-input model
    PATH.npz        arrays named after the inputs; for a one-input model, the one array whose shape fits
    sample:DIR      the sample data in a model repository: DIR/<model>/*.npz (or .npy), names with
                    "sample" first; DIR may also be the model's own folder

Shapes: a leading -1 in an input's metadata shape is the batch dimension and becomes ``--batch``;
any other -1 becomes 1 unless ``--shape NAME=D1,D2`` gives the per-sample shape. Arrays in files
hold samples along axis 0 (or are one sample); a request takes ``batch`` consecutive samples, and
up to ``variants`` distinct requests are built and sent in turn.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from loadtests.wire import ModelMeta, TensorMeta, WireTensor, encode_request

NUMPY_DTYPES: dict[str, str] = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
    "BF16": "float32",
    "BYTES": "object",
}
DEFAULT_VARIANTS = 32


class InputError(ValueError):
    """Inputs that cannot be built for this model; the message says which input and why."""


@dataclass(frozen=True)
class InputSpec:
    source: str = "random"  # "random", a file path, or "sample:DIR"
    shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    variants: int = DEFAULT_VARIANTS


def parse_shape_overrides(items: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """['input=3,224,224'] → {'input': (3, 224, 224)}."""
    shapes: dict[str, tuple[int, ...]] = {}
    for item in items:
        name, sep, dims = item.partition("=")
        try:
            shape = tuple(int(d) for d in dims.split(",") if d.strip())
        except ValueError:
            shape = ()
        if not sep or not name or not shape or min(shape) < 1:
            raise InputError(f"bad --shape {item!r}: expected NAME=D1,D2,... with positive dims")
        shapes[name] = shape
    return shapes


def batches(meta: TensorMeta) -> bool:
    return len(meta.shape) > 0 and meta.shape[0] == -1


def sample_shape(meta: TensorMeta, overrides: Mapping[str, tuple[int, ...]]) -> tuple[int, ...]:
    """The shape of one sample (without the batch dimension, for a batching model)."""
    dims = meta.shape[1:] if batches(meta) else meta.shape
    if meta.name in overrides:
        given = overrides[meta.name]
        if len(given) != len(dims) or any(d not in (-1, g) for d, g in zip(dims, given, strict=True)):
            raise InputError(
                f"--shape {meta.name}={','.join(map(str, given))} does not fit the model's shape {list(dims)}"
            )
        return given
    return tuple(1 if d == -1 else d for d in dims)


def request_shape(meta: TensorMeta, batch: int, overrides: Mapping[str, tuple[int, ...]]) -> tuple[int, ...]:
    one = sample_shape(meta, overrides)
    if batches(meta):
        return (batch, *one)
    if batch != 1:
        raise InputError(
            f"input {meta.name!r} has shape {list(meta.shape)}: the model takes no batch dimension, "
            "so --batch must be 1"
        )
    return one


def to_wire(meta: TensorMeta, array: np.ndarray) -> WireTensor:
    if meta.datatype == "BYTES":
        items = [v if isinstance(v, bytes) else str(v).encode() for v in array.reshape(-1)]
        raw = b"".join(struct.pack("<I", len(v)) + v for v in items)
    elif meta.datatype == "BF16":
        raw = (np.ascontiguousarray(array, dtype="<f4").view("<u4") >> 16).astype("<u2").tobytes()
    else:
        raw = np.ascontiguousarray(
            array, dtype=np.dtype(NUMPY_DTYPES[meta.datatype]).newbyteorder("<")
        ).tobytes()
    return WireTensor(meta.name, meta.datatype, tuple(int(d) for d in array.shape), raw)


def random_array(meta: TensorMeta, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    kind = meta.datatype
    if kind not in NUMPY_DTYPES:
        raise InputError(f"input {meta.name!r}: unknown datatype {kind!r}")
    if kind == "BYTES":
        letters = rng.integers(97, 123, size=(*shape, 16), dtype=np.uint8)
        return np.array([bytes(row) for row in letters.reshape(-1, 16)], dtype=object).reshape(shape)
    if kind == "BOOL":
        return rng.random(shape) < 0.5
    if kind.startswith(("FP", "BF")):
        return rng.random(shape).astype(NUMPY_DTYPES[kind])
    return rng.integers(0, 100, size=shape).astype(NUMPY_DTYPES[kind])


def random_requests(
    meta: ModelMeta, batch: int, spec: InputSpec, rng: np.random.Generator
) -> list[list[WireTensor]]:
    shapes = {t.name: request_shape(t, batch, spec.shapes) for t in meta.inputs}
    return [
        [to_wire(t, random_array(t, shapes[t.name], rng)) for t in meta.inputs] for _ in range(spec.variants)
    ]


def find_sample_file(directory: Path, model: str) -> Path:
    for folder in (directory / model, directory):
        if folder.is_dir():
            found = sorted(folder.glob("*.npz")) + sorted(folder.glob("*.npy"))
            if found:
                return sorted(found, key=lambda p: ("sample" not in p.name, p.name))[0]
    raise InputError(f"no sample data (*.npz, *.npy) in {directory / model} or {directory}")


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise InputError(f"input file {path} does not exist")
    if path.suffix == ".npy":
        return {"": np.load(path, allow_pickle=False)}
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    raise InputError(f"input file {path}: expected .npy or .npz")


def sample_pattern(meta: TensorMeta, overrides: Mapping[str, tuple[int, ...]]) -> tuple[int, ...]:
    """The per-sample shape a file's array must have; -1 matches any size."""
    if meta.name in overrides:
        return overrides[meta.name]
    return meta.shape[1:] if batches(meta) else meta.shape


def _fits(pattern: tuple[int, ...], array: np.ndarray) -> np.ndarray | None:
    """The array as samples along axis 0, or None when its shape does not fit the input."""

    def same(shape: tuple[int, ...]) -> bool:
        return len(shape) == len(pattern) and all(p in (-1, s) for p, s in zip(pattern, shape, strict=True))

    if array.ndim == len(pattern) + 1 and same(tuple(array.shape[1:])):
        return array
    if same(tuple(array.shape)):
        return array[np.newaxis, ...]
    return None


def match_arrays(meta: ModelMeta, arrays: Mapping[str, np.ndarray], spec: InputSpec) -> dict[str, np.ndarray]:
    """Per input name, its samples along axis 0."""
    matched: dict[str, np.ndarray] = {}
    for tensor in meta.inputs:
        one = sample_pattern(tensor, spec.shapes)
        if tensor.name in arrays:
            samples = _fits(one, arrays[tensor.name])
            if samples is None:
                raise InputError(
                    f"array {tensor.name!r} has shape {list(arrays[tensor.name].shape)}; "
                    f"input {tensor.name!r} needs samples of {list(one)}"
                )
        else:
            fitting = [a for a in (_fits(one, arr) for arr in arrays.values()) if a is not None]
            if len(meta.inputs) != 1 or len(fitting) != 1:
                raise InputError(
                    f"no array for input {tensor.name!r} (samples of {list(one)}); "
                    f"file holds {sorted(arrays)}"
                )
            samples = fitting[0]
        matched[tensor.name] = _cast(tensor, samples)
    return matched


def _cast(meta: TensorMeta, array: np.ndarray) -> np.ndarray:
    if meta.datatype == "BYTES":
        return array
    target = np.dtype(NUMPY_DTYPES[meta.datatype])
    if not np.can_cast(array.dtype, target, "same_kind"):
        raise InputError(f"input {meta.name!r} is {meta.datatype}; the file's array is {array.dtype}")
    return array.astype(target, copy=False)


def file_requests(meta: ModelMeta, batch: int, spec: InputSpec, path: Path) -> list[list[WireTensor]]:
    for tensor in meta.inputs:
        request_shape(tensor, batch, spec.shapes)  # validates --batch against the model
    samples = match_arrays(meta, load_arrays(path), spec)
    n = max(len(a) for a in samples.values())
    variants = max(1, min(spec.variants, -(-n // batch)))
    requests = []
    for v in range(variants):
        rows = np.arange(v * batch, (v + 1) * batch)
        requests.append([_request_tensor(t, samples[t.name], rows) for t in meta.inputs])
    return requests


def _request_tensor(meta: TensorMeta, samples: np.ndarray, rows: np.ndarray) -> WireTensor:
    chosen = np.take(samples, rows, axis=0, mode="wrap")
    return to_wire(meta, chosen if batches(meta) else chosen[0])


def build_bodies(meta: ModelMeta, version: str, batch: int, spec: InputSpec, seed: int) -> list[bytes]:
    """Pre-serialised ModelInferRequest bytes, ``spec.variants`` of them at most."""
    if batch < 1:
        raise InputError(f"--batch must be at least 1, got {batch}")
    if spec.source == "random":
        requests = random_requests(meta, batch, spec, np.random.default_rng(seed))
    elif spec.source.startswith("sample:"):
        requests = file_requests(meta, batch, spec, find_sample_file(Path(spec.source[7:]), meta.name))
    else:
        requests = file_requests(meta, batch, spec, Path(spec.source))
    return [encode_request(meta.name, version, tensors) for tensors in requests]
