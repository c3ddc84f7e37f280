"""CUDA graphs per batch-size bucket (serving/backends/torch_graphs.py): the bucket logic, on the CPU.

Capture and replay need a GPU; scripts/gpu_check.sh runs them (graph vs eager, per bucket) on one.
Here: which bucket a batch takes, how its rows are padded and cut back, what a graph is keyed by, the
`cuda_graphs` parameter, and that a CPU placement with it set serves exactly as without.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from serving.backends.base import InstanceSpec, Placement, TensorDecl
from serving.backends.devices import DeviceInventory
from serving.backends.torch import TorchBackend
from serving.backends.torch_graphs import (
    bucket_for,
    cuda_graphs_wanted,
    fill_static,
    graph_buckets,
    graph_key,
    head_rows,
)
from serving.errors import ModelConfigError

CPU_ONLY = DeviceInventory(gpu_count=0, ort_providers=("CPUExecutionProvider",))
DIGITS_V2 = Path(__file__).resolve().parents[2] / "models" / "digits" / "2" / "model.pt"
FP32 = np.dtype(np.float32)


@pytest.mark.parametrize(
    ("max_batch_size", "buckets"),
    [(64, (1, 2, 4, 8, 16, 32, 64)), (48, (1, 2, 4, 8, 16, 32, 48)), (1, (1,)), (2, (1, 2)), (0, ())],
)
def test_buckets_are_powers_of_two_up_to_max_batch_size(
    max_batch_size: int, buckets: tuple[int, ...]
) -> None:
    assert graph_buckets(max_batch_size) == buckets


@pytest.mark.parametrize(
    ("rows", "bucket"), [(1, 1), (2, 2), (3, 4), (17, 32), (33, 48), (48, 48), (49, None)]
)
def test_a_batch_takes_the_smallest_bucket_that_holds_it(rows: int, bucket: int | None) -> None:
    assert bucket_for(rows, graph_buckets(48)) == bucket


def test_padding_rows_are_zeroed_and_results_cut_back_to_the_batch() -> None:
    static = torch.full((8, 3), 7.0)  # stale values of an earlier, larger batch
    batch = torch.arange(9, dtype=torch.float32).reshape(3, 3)
    fill_static(static, batch)
    assert torch.equal(static[:3], batch) and not static[3:].any()
    result = {"a": static * 2, "b": (static[:, :1], torch.tensor(5.0)), "c": [static]}
    cut = head_rows(result, 3)
    assert torch.equal(cut["a"], batch * 2)
    assert cut["b"][0].shape == (3, 1) and cut["b"][1].item() == 5.0 and isinstance(cut["b"], tuple)
    assert isinstance(cut["c"], list) and cut["c"][0].shape == (3, 3)


def test_a_graph_is_specific_to_bucket_dims_and_dtype() -> None:
    base = graph_key(8, [torch.zeros(3, 64)])
    assert base == graph_key(8, [torch.ones(5, 64)])  # rows within the bucket do not matter
    assert base != graph_key(16, [torch.zeros(3, 64)])
    assert base != graph_key(8, [torch.zeros(3, 32)])
    assert base != graph_key(8, [torch.zeros(3, 64, dtype=torch.float16)])


def test_the_parameter_is_checked_and_honoured_only_on_cuda_with_batching() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    with pytest.raises(ModelConfigError, match="parameter 'cuda_graphs' must be \"true\" or \"false\", got 'yes'"):
        cuda_graphs_wanted("m.pt", {"cuda_graphs": "yes"}, cuda, 8)
    assert not cuda_graphs_wanted("m.pt", {"cuda_graphs": "true"}, cpu, 8)
    assert not cuda_graphs_wanted("m.pt", {"cuda_graphs": "true"}, cuda, 0)
    assert not cuda_graphs_wanted("m.pt", {}, cuda, 8)
    assert cuda_graphs_wanted("m.pt", {"cuda_graphs": "TRUE"}, cuda, 8)


@pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")
def test_cpu_placement_with_cuda_graphs_serves_as_without() -> None:
    inputs, outputs = [TensorDecl("input", FP32, (64,))], [TensorDecl("probabilities", FP32, (10,))]
    rows = np.random.default_rng(0).random((5, 64), dtype=np.float32) * 16

    def probabilities(parameters: dict[str, str]) -> np.ndarray:
        spec = InstanceSpec(DIGITS_V2, Placement("cpu"), parameters, CPU_ONLY)
        return TorchBackend(spec, inputs, outputs, 64).infer({"input": rows}).outputs["probabilities"]

    with_graphs = probabilities({"cuda_graphs": "true"})
    assert with_graphs.shape == (5, 10)
    np.testing.assert_array_equal(with_graphs, probabilities({}))
    with pytest.raises(ModelConfigError, match="cuda_graphs"):
        probabilities({"cuda_graphs": "maybe"})
