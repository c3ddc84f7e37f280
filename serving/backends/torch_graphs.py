"""CUDA graphs for the torch backend: one graph per padded batch-size bucket, replayed per batch.

A batch of `rows` rows runs in the smallest bucket >= rows (powers of two up to max_batch_size, and
max_batch_size itself): its inputs are copied into the bucket's static input tensors (the padding rows
zeroed), the graph is replayed, and the outputs are the first `rows` rows of the static outputs. That
takes the per-kernel launch cost (Python dispatch, many small kernels at batch 1) off the request
path; the model must treat rows independently (an eval-mode network does), so padding changes nothing.

Guards: graphs are only for a CUDA placement of a batching model (max_batch_size > 0) whose inputs
are all tensors; a batch whose other dimensions differ from what a bucket captured gets its own graph
(keyed by shapes and dtypes); a batch above the largest bucket, or a capture that fails (a model with
data-dependent control flow or host syncs), runs eagerly, and a failed key is not tried again.
Graphs are captured when a bucket is first needed, or all at load (`warm`) when every input has fixed
dims. Static buffers stay allocated for the instance's life: one set per captured bucket, from one
memory pool shared by the instance's graphs (captured largest first, so smaller ones reuse memory).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from serving.parameters import flag

logger = logging.getLogger("serving.backends")

GraphKey = tuple[int, tuple[tuple[tuple[int, ...], torch.dtype], ...]]
WARMUP_CALLS = 3


def graph_buckets(max_batch_size: int) -> tuple[int, ...]:
    """Powers of two below max_batch_size, then max_batch_size: 64 -> (1, 2, 4, 8, 16, 32, 64)."""
    if max_batch_size < 1:
        return ()
    buckets = []
    size = 1
    while size < max_batch_size:
        buckets.append(size)
        size *= 2
    return (*buckets, max_batch_size)


def bucket_for(rows: int, buckets: Sequence[int]) -> int | None:
    """The smallest bucket that holds `rows` rows; None when none does (the batch runs eagerly)."""
    for bucket in buckets:
        if bucket >= rows:
            return bucket
    return None


def graph_key(bucket: int, values: Sequence[torch.Tensor]) -> GraphKey:
    """What a captured graph is specific to: the bucket, and each input's non-batch dims and dtype."""
    return bucket, tuple((tuple(value.shape[1:]), value.dtype) for value in values)


def fill_static(static: torch.Tensor, value: torch.Tensor) -> None:
    """Copy `value`'s rows into the head of `static` and zero the padding rows after them."""
    rows = value.shape[0]
    static[:rows].copy_(value, non_blocking=True)
    if rows < static.shape[0]:
        static[rows:].zero_()


def head_rows(result: Any, rows: int) -> Any:
    """The first `rows` rows of every tensor in a model's result (a tensor, tuple/list or dict)."""
    if isinstance(result, torch.Tensor):
        return result[:rows] if result.dim() else result
    if isinstance(result, Mapping):
        return {name: head_rows(value, rows) for name, value in result.items()}
    if isinstance(result, (tuple, list)):
        return type(result)(head_rows(value, rows) for value in result)
    return result


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    inputs: list[torch.Tensor]
    output: Any


class CudaGraphs:
    """One torch module's graphs on one CUDA device and stream (callers run inside that stream)."""

    def __init__(self, module: Callable[..., Any], max_batch_size: int, stream: torch.cuda.Stream) -> None:
        self._module = module
        self._stream = stream
        self.buckets = graph_buckets(max_batch_size)
        self._graphs: dict[GraphKey, _Graph] = {}
        self._failed: set[GraphKey] = set()
        self._pool = torch.cuda.graph_pool_handle()

    @property
    def captured(self) -> list[int]:
        return sorted(key[0] for key in self._graphs)

    def run(self, values: Sequence[Any]) -> Any | None:
        """The module's result for `values` through a graph; None: run it eagerly instead."""
        if not values or not all(isinstance(value, torch.Tensor) and value.dim() for value in values):
            return None
        rows = int(values[0].shape[0])
        bucket = bucket_for(rows, self.buckets)
        if bucket is None or any(value.shape[0] != rows for value in values):
            return None
        key = graph_key(bucket, values)
        entry = self._graphs.get(key)
        if entry is None:
            if key in self._failed:
                return None
            entry = self._capture(key, values)
            if entry is None:
                return None
        for static, value in zip(entry.inputs, values, strict=True):
            fill_static(static, value)
        entry.graph.replay()
        return head_rows(entry.output, rows)

    def warm(self, examples: Sequence[torch.Tensor]) -> None:
        """Capture every bucket now, largest first, from one-row `examples` (fixed-dims inputs)."""
        for bucket in sorted(self.buckets, reverse=True):
            values = [example.expand(bucket, *example.shape[1:]).contiguous() for example in examples]
            key = graph_key(bucket, values)
            if key not in self._graphs and key not in self._failed:
                self._capture(key, values)

    def _capture(self, key: GraphKey, values: Sequence[torch.Tensor]) -> _Graph | None:
        bucket = key[0]
        inputs = [
            torch.zeros((bucket, *value.shape[1:]), dtype=value.dtype, device=value.device)
            for value in values
        ]
        try:
            for _ in range(WARMUP_CALLS):  # lazy initialisation (cuBLAS handles, autotuning) before capture
                self._module(*inputs)
            self._stream.synchronize()
            graph = torch.cuda.CUDAGraph()
            # thread_local: another instance's thread may use the device while this one captures.
            with torch.cuda.graph(
                graph, pool=self._pool, stream=self._stream, capture_error_mode="thread_local"
            ):
                output = self._module(*inputs)
        except Exception as exc:  # noqa: BLE001 - any capture failure means: run this shape eagerly
            self._failed.add(key)
            logger.warning("CUDA graph capture failed for batch bucket %d (runs eagerly): %s", bucket, exc)
            return None
        entry = _Graph(graph, inputs, output)
        self._graphs[key] = entry
        logger.info("CUDA graph captured for batch bucket %d", bucket)
        return entry


def cuda_graphs_wanted(
    model_file: Any, parameters: Mapping[str, str], device: torch.device, max_batch_size: int
) -> bool:
    """The config parameter `cuda_graphs` (true | false, default false), honoured on a CUDA placement of
    a batching model; elsewhere it is logged and ignored."""
    if not flag(parameters, "cuda_graphs", str(model_file)):
        return False
    if device.type != "cuda":
        logger.info("%s: cuda_graphs ignored on the CPU", model_file)
        return False
    if max_batch_size < 1:
        logger.info("%s: cuda_graphs needs max_batch_size > 0 (batch-size buckets); ignored", model_file)
        return False
    return True
