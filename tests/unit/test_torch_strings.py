"""TYPE_STRING through TorchScript (Triton libtorch's convention), on the backend directly.

A BYTES input reaches the model as List[str] (UTF-8 decoded, flattened row-major); a List[str] output
comes back as BYTES (UTF-8 encoded) shaped (rows, *config dims), or by the dims alone without batching.
torch.export (.pt2) cannot take strings: such configs are refused at load, naming the tensor.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from serving.backends.base import InstanceSpec, Placement, TensorDecl
from serving.backends.devices import DeviceInventory
from serving.backends.loader import create_backend
from serving.backends.torch import TorchBackend
from serving.errors import ModelConfigError, ModelExecutionError
from tests.torch_string_models import SUFFIX, AppendSuffix, ReturnsTensor, SuffixAndLength, write_scripted

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")

CPU = Placement("cpu")
CPU_ONLY = DeviceInventory(gpu_count=0, ort_providers=("CPUExecutionProvider",))
TEXT = np.dtype(object)
FP32 = np.dtype(np.float32)
STRINGS = [b"", b"he\x00llo", "héllo wörld ✓ 日本語 🚀".encode(), b"\x00", b"plain", b"trailing\x00"]


def texts(items: Sequence[bytes], shape: tuple[int, ...]) -> np.ndarray:
    data = np.empty(len(items), dtype=object)
    data[:] = list(items)
    return data.reshape(shape)


def backend(
    model_file: Path, inputs: list[TensorDecl], outputs: list[TensorDecl], max_batch_size: int
) -> TorchBackend:
    return TorchBackend(InstanceSpec(model_file, CPU, {}, CPU_ONLY), inputs, outputs, max_batch_size)


def test_strings_round_trip_byte_for_byte_in_row_major_order(tmp_path: Path) -> None:
    model_file = write_scripted(AppendSuffix(), tmp_path / "model.pt")
    created = backend(model_file, [TensorDecl("x", TEXT, (2,))], [TensorDecl("y", TEXT, (2,))], 8)
    result = created.infer({"x": texts(STRINGS, (3, 2))})
    y = result.outputs["y"]
    assert y.shape == (3, 2) and y.dtype == object
    assert [bytes(item) for item in y.reshape(-1)] == [s + SUFFIX.encode() for s in STRINGS]
    assert all(type(item) is bytes for item in y.reshape(-1))


def test_without_batching_the_config_dims_shape_the_output(tmp_path: Path) -> None:
    model_file = write_scripted(AppendSuffix(), tmp_path / "model.pt")
    created = backend(model_file, [TensorDecl("x", TEXT, (2, 3))], [TensorDecl("y", TEXT, (3, -1))], 0)
    y = created.infer({"x": texts(STRINGS, (2, 3))}).outputs["y"]
    assert y.shape == (3, 2)
    assert [bytes(item) for item in y.reshape(-1)] == [s + SUFFIX.encode() for s in STRINGS]


def test_strings_and_tensors_mix_in_a_tuple(tmp_path: Path) -> None:
    model_file = write_scripted(SuffixAndLength(), tmp_path / "model.pt")
    inputs = [TensorDecl("x", TEXT, (1,)), TensorDecl("scale", FP32, (1,))]
    outputs = [TensorDecl("y", TEXT, (1,)), TensorDecl("n", np.dtype(np.float64), (1,))]
    created = create_backend("pytorch", model_file, CPU, {}, CPU_ONLY, inputs, outputs, 8)
    x = texts(STRINGS, (6, 1))
    result = created.infer({"x": x, "scale": np.full((6, 1), 2.0, dtype=np.float32)})
    assert [bytes(item) for item in result.outputs["y"].reshape(-1)] == [s + SUFFIX.encode() for s in STRINGS]
    assert result.outputs["n"].dtype == np.float64
    np.testing.assert_array_equal(result.outputs["n"].reshape(-1), [2.0 * len(s) for s in STRINGS])


def test_a_list_that_does_not_fill_the_config_dims_fails_the_batch(tmp_path: Path) -> None:
    model_file = write_scripted(AppendSuffix(), tmp_path / "model.pt")
    created = backend(model_file, [TensorDecl("x", TEXT, (3,))], [TensorDecl("y", TEXT, (2,))], 8)
    with pytest.raises(ModelExecutionError, match=r"output 'y': 6 strings do not fill the shape \[2, 2\]"):
        created.infer({"x": texts(STRINGS, (2, 3))})


def test_a_tensor_for_a_string_output_fails_the_batch(tmp_path: Path) -> None:
    model_file = write_scripted(ReturnsTensor(), tmp_path / "model.pt")
    created = backend(model_file, [TensorDecl("x", TEXT, (1,))], [TensorDecl("y", TEXT, (1,))], 8)
    with pytest.raises(ModelExecutionError, match="'y' is TYPE_STRING but the model returned a tensor"):
        created.infer({"x": texts([b"a"], (1, 1))})


def test_a_string_output_with_two_variable_dims_is_refused_at_load(tmp_path: Path) -> None:
    model_file = write_scripted(AppendSuffix(), tmp_path / "model.pt")
    with pytest.raises(ModelConfigError, match="'y' has dims \\[-1, -1\\]"):
        backend(model_file, [TensorDecl("x", TEXT, (-1,))], [TensorDecl("y", TEXT, (-1, -1))], 8)


@pytest.mark.parametrize("kind", ["input", "output"])
def test_torch_export_refuses_strings_naming_the_tensor(tmp_path: Path, kind: str) -> None:
    model_file = tmp_path / "model.pt2"
    model_file.write_bytes(b"never read: the config is refused first")
    text, number = TensorDecl("text", TEXT, (1,)), TensorDecl("number", FP32, (1,))
    inputs, outputs = ([text], [number]) if kind == "input" else ([number], [text])
    with pytest.raises(ModelConfigError, match=f"{kind} 'text' is TYPE_STRING, but torch.export"):
        create_backend("torch_export", model_file, CPU, {}, CPU_ONLY, inputs, outputs, 8)
