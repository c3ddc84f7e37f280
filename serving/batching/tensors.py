"""Merging requests into a batch and splitting a batch's outputs back: pure functions on numpy arrays."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from serving.errors import InvalidInput, ModelExecutionError
from serving.types import Array, TensorMap


def request_rows(inputs: TensorMap, max_batch_size: int) -> int:
    """Rows of one request (axis 0, the same for every input); InvalidInput when unusable."""
    if not inputs:
        raise InvalidInput("a request needs at least one input")
    rows = -1
    for name, array in inputs.items():
        shape = array.shape
        if not shape:
            raise InvalidInput(f"input '{name}' has no batch dimension (shape ())")
        if rows < 0:
            rows = shape[0]
        elif shape[0] != rows:
            sizes = ", ".join(f"'{n}' has {a.shape[0] if a.ndim else '()'}" for n, a in inputs.items())
            raise InvalidInput(f"inputs disagree on the batch size: {sizes}")
    if rows < 1:
        raise InvalidInput("a request needs at least one row (batch size 0)")
    if rows > max_batch_size:
        raise InvalidInput(f"request batch size {rows} exceeds max_batch_size {max_batch_size}")
    return int(rows)


def batch_signature(inputs: TensorMap) -> Hashable:
    """What must match for two requests to share a batch: names, non-batch shapes, dtypes."""
    if len(inputs) == 1:  # the common case, without the sort
        ((name, array),) = inputs.items()
        return name, array.dtype, array.shape[1:]
    return tuple(sorted(((name, array.dtype, array.shape[1:]) for name, array in inputs.items()), key=_name))


def _name(entry: tuple[str, object, object]) -> str:
    return entry[0]


# Where a merged input may go: (name, shape, dtype) → a writable array of that shape and dtype, or None.
Allocate = Callable[[str, tuple[int, ...], np.dtype[Any]], Array | None]


def merge_inputs(requests: Sequence[TensorMap], allocate: Allocate | None = None) -> dict[str, Array]:
    """Concatenate the requests' inputs along axis 0, into `allocate`'s array where it gives one (the
    backend's pinned memory, say); a lone request is passed through uncopied."""
    if len(requests) == 1:
        return dict(requests[0])
    merged: dict[str, Array] = {}
    for name in requests[0]:
        parts = [r[name] for r in requests]
        first = parts[0]
        out = None
        if allocate is not None:
            out = allocate(name, (sum(p.shape[0] for p in parts), *first.shape[1:]), first.dtype)
        merged[name] = np.concatenate(parts, axis=0, out=out)
    return merged


def split_outputs(outputs: Mapping[str, Array], row_counts: Sequence[int]) -> list[dict[str, Array]]:
    """Each request's rows of every output (views, no copies); ModelExecutionError on a row mismatch."""
    total = sum(row_counts)
    for name, array in outputs.items():
        rows = array.shape[0] if array.ndim else None
        if rows != total:
            raise ModelExecutionError(
                f"output '{name}' has {rows if rows is not None else 'no'} rows "
                f"but the batch has {total} (shape {array.shape})"
            )
    if len(row_counts) == 1:
        return [dict(outputs)]
    bounds = list(itertools.accumulate(row_counts, initial=0))
    return [{name: array[lo:hi] for name, array in outputs.items()} for lo, hi in itertools.pairwise(bounds)]
