"""Triton configs a user already has, through the real server with tritonclient.

- Triton's `simple_string` (STRING inputs cast to INT32, sums and differences cast back) loads with the
  built-in warm-up and serves strings of numbers.
- `model_warmup` samples (zero_data, random_data, input_data_file; batch_size; count) run at load: a
  sample that must fail fails the load with the sample named in RepositoryIndex's reason, and warm-up
  runs are not counted in ModelStatistics (as in Triton).
- `reshape`: the densenet_onnx quickstart config (output dims [1000], model [1, 1000, 1, 1]; input
  [3, H, W] as [1, 3, H, W]) and an input reshape on a batching model.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tests.model_factory import (
    DENSENET_LIKE_CONFIG,
    STRING_IDENTITY_CONFIG,
    densenet_like_weights,
    simple_string_config,
    write_add_model,
    write_densenet_like_model,
    write_simple_string_model,
    write_string_identity_model,
)
from tests.servers import ServerProcess, serving

pytestmark = pytest.mark.integration


def serialized(items: list[bytes]) -> bytes:
    """Triton's serialized BYTES tensor (what tritonclient.utils.serialize_byte_tensor writes)."""
    return b"".join(len(i).to_bytes(4, "little") + i for i in items)


def string_inputs(choice0: str, choice1: str) -> str:
    return "".join(
        f'inputs {{ key: "{name}" value: {{ data_type: TYPE_STRING dims: [ 16 ] {choice} }} }} '
        for name, choice in (("INPUT0", choice0), ("INPUT1", choice1))
    )


RESHAPED_ADD = """
name: "add_reshaped"
max_batch_size: 8
input [ { name: "x" data_type: TYPE_FP32 dims: [ 2, 2 ] reshape { shape: [ 4 ] } } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } ]
model_warmup [ { name: "rows" batch_size: 8 count: 3
                 inputs { key: "x" value: { data_type: TYPE_FP32 dims: [ 2, 2 ] random_data: true } } } ]
"""


def write_model(
    root: Path, name: str, config: str, build: object, files: dict[str, bytes] | None = None
) -> None:
    folder = root / name
    folder.mkdir()
    (folder / "config.pbtxt").write_text(config)
    for relative, contents in (files or {}).items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_bytes(contents)
    build(folder / "1" / "model.onnx")  # type: ignore[operator]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("repo")
    digits = serialized([str(i).encode() for i in range(16)])
    write_model(root, "simple_string", simple_string_config(), write_simple_string_model)
    from_file = 'input_data_file: "digits"'
    file_sample = (
        f'model_warmup [ {{ name: "file" batch_size: 2 count: 4 {string_inputs(from_file, from_file)} }} ]'
    )
    empty_sample = (
        f'model_warmup [ {{ name: "empty" batch_size: 1 {string_inputs(from_file, "zero_data: true")} }} ]'
    )
    write_model(
        root,
        "warm_file",
        simple_string_config("warm_file", extra=file_sample),
        write_simple_string_model,
        {"warmup/digits": digits},
    )
    write_model(
        root,
        "warm_zero_strings",
        simple_string_config("warm_zero_strings", extra=empty_sample),
        write_simple_string_model,
        {"warmup/digits": digits},
    )
    random_strings = 'inputs { key: "x" value: { data_type: TYPE_STRING dims: [ 1 ] random_data: true } }'
    write_model(
        root,
        "strings",
        STRING_IDENTITY_CONFIG
        + f'model_warmup [ {{ name: "text" batch_size: 8 count: 2 {random_strings} }} ]',
        write_string_identity_model,
    )
    labels = "".join(f"class {i}\n" for i in range(1000)).encode()
    write_model(
        root,
        "densenet_onnx",
        DENSENET_LIKE_CONFIG,
        write_densenet_like_model,
        {"densenet_labels.txt": labels},
    )
    write_model(root, "add_reshaped", RESHAPED_ADD, lambda path: write_add_model(path, 4, 1.0))
    yield from serving(root, tmp_path_factory.mktemp("configs") / "server.log")


def infer_strings(
    client: grpcclient.InferenceServerClient, model: str, a: np.ndarray, b: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    inputs = []
    for name, values in (("INPUT0", a), ("INPUT1", b)):
        data = np.array([str(v).encode() for v in values.reshape(-1)], dtype=object).reshape(values.shape)
        tensor = grpcclient.InferInput(name, list(data.shape), "BYTES")
        tensor.set_data_from_numpy(data)
        inputs.append(tensor)
    result = client.infer(model, inputs)
    return tuple(result.as_numpy(n).astype(np.int64) for n in ("OUTPUT0", "OUTPUT1"))  # type: ignore[return-value]


@pytest.mark.parametrize("model", ["simple_string", "warm_file"])
def test_simple_string_serves_strings_of_numbers(
    client: grpcclient.InferenceServerClient, model: str
) -> None:
    assert client.is_model_ready(model)
    a = np.arange(32, dtype=np.int64).reshape(2, 16)
    b = np.full((2, 16), -7, dtype=np.int64)
    total, difference = infer_strings(client, model, a, b)
    assert np.array_equal(total, a + b) and np.array_equal(difference, a - b)


def test_a_failing_warmup_sample_fails_the_load_and_is_named(
    client: grpcclient.InferenceServerClient,
) -> None:
    index = {m.name: m for m in client.get_model_repository_index().models}
    entry = index["warm_zero_strings"]
    assert entry.state == "FAILED", entry
    assert "warm-up sample 'empty'" in entry.reason, entry.reason
    assert "input 'INPUT1' BYTES [1, 16]" in entry.reason and "Cast" in entry.reason, entry.reason
    assert not client.is_model_ready("warm_zero_strings")


def test_warmup_ran_its_samples_and_is_not_counted(
    client: grpcclient.InferenceServerClient, server: ServerProcess
) -> None:
    log = server.log()
    assert (
        "warm_file v1: warm-up sample 'file' (input 'INPUT0' BYTES [2, 16], input 'INPUT1' BYTES [2, 16]) ran 4 time(s)"
        in log
    )
    assert "strings v1: warm-up sample 'text' (input 'x' BYTES [8, 1]) ran 2 time(s)" in log
    assert (
        "simple_string v1: warm-up sample 'zeros' (input 'INPUT0' BYTES [1, 16], input 'INPUT1' BYTES [1, 16]) ran 1 time(s)"
        in log
    )
    assert "add_reshaped v1: warm-up sample 'rows' (input 'x' FP32 [8, 2, 2]) ran 3 time(s)" in log
    stats = client.get_inference_statistics("strings", as_json=True)["model_stats"][0]
    assert int(stats.get("inference_count", 0)) == 0 and int(stats.get("execution_count", 0)) == 0


def test_densenet_reshape_output_and_input(client: grpcclient.InferenceServerClient) -> None:
    meta = client.get_model_metadata("densenet_onnx", as_json=True)
    assert meta["inputs"][0]["shape"] == ["3", "4", "4"] and meta["outputs"][0]["shape"] == ["1000"]
    config = client.get_model_config("densenet_onnx", as_json=True)["config"]
    assert config["input"][0]["format"] == "FORMAT_NCHW"  # image_client.py reads the layout from here
    x = np.random.default_rng(3).random((3, 4, 4), dtype=np.float32)
    tensor = grpcclient.InferInput("data_0", [3, 4, 4], "FP32")
    tensor.set_data_from_numpy(x)
    scores = client.infer("densenet_onnx", [tensor]).as_numpy("fc6_1")
    assert scores.shape == (1000,)
    expected = densenet_like_weights() @ x.mean(axis=(1, 2))
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-5)


def test_input_reshape_keeps_the_batch_dimension(client: grpcclient.InferenceServerClient) -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 2, 2)
    tensor = grpcclient.InferInput("x", [3, 2, 2], "FP32")
    tensor.set_data_from_numpy(x)
    y = client.infer("add_reshaped", [tensor]).as_numpy("y")
    np.testing.assert_array_equal(y, x.reshape(3, 4) + 1)
