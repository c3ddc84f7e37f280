"""Triton config fields a user already has: model_warmup, reshape, label_filename and format.

Each parses into the ModelSpec, and each mistake is refused with the file and the field named.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from serving.errors import ModelConfigError
from serving.lifecycle.repository import parse_config
from serving.lifecycle.warmup import default_sample, deserialize_bytes
from tests.model_factory import DENSENET_LIKE_CONFIG, simple_string_config

NUMBERS = """
name: "m"
max_batch_size: 4
input [ { name: "x" data_type: TYPE_INT32 dims: [ 2, -1 ] } ]
output [ { name: "y" data_type: TYPE_INT32 dims: [ 2, -1 ] } ]
"""


def serialized(items: list[bytes]) -> bytes:
    return b"".join(len(i).to_bytes(4, "little") + i for i in items)


def model_folder(tmp_path: Path, name: str = "m", files: dict[str, bytes] | None = None) -> Path:
    folder = tmp_path / name
    for relative, contents in (files or {}).items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_bytes(contents)
    folder.mkdir(exist_ok=True)
    return folder


def warmup(body: str) -> str:
    return NUMBERS + f"model_warmup [ {{ {body} }} ]"


def test_warmup_samples_parse_and_build_their_data(tmp_path: Path) -> None:
    row = np.arange(6, dtype=np.int32)
    folder = model_folder(tmp_path, files={"warmup/x.bin": row.tobytes()})
    text = (
        NUMBERS
        + """
model_warmup [
  { name: "z" batch_size: 3 count: 5 inputs { key: "x" value: { data_type: TYPE_INT32 dims: [2, 3] zero_data: true } } },
  { name: "r" batch_size: 2 inputs { key: "x" value: { data_type: TYPE_INT32 dims: [2, 1] random_data: true } } },
  { name: "f" batch_size: 4 inputs { key: "x" value: { data_type: TYPE_INT32 dims: [2, 3] input_data_file: "x.bin" } } }
]"""
    )
    zero, rand, file = parse_config(text, folder).warmup
    assert (zero.name, zero.count, rand.count) == ("z", 5, 1)
    assert zero.arrays()["x"].shape == (3, 2, 3) and not zero.arrays()["x"].any()
    random_values = rand.arrays()["x"]
    assert random_values.shape == (2, 2, 1) and random_values.dtype == np.int32
    assert np.array_equal(random_values, rand.arrays()["x"])  # deterministic
    from_file = file.arrays()["x"]
    assert from_file.shape == (4, 2, 3)
    assert all(np.array_equal(r, row.reshape(2, 3)) for r in from_file)


def test_string_warmup_data(tmp_path: Path) -> None:
    items = [str(i).encode() for i in range(16)]
    folder = model_folder(tmp_path, "simple_string", {"warmup/digits": serialized(items)})
    inputs = "".join(
        f'inputs {{ key: "{name}" value: {{ data_type: TYPE_STRING dims: [16] {choice} }} }} '
        for name, choice in (("INPUT0", 'input_data_file: "digits"'), ("INPUT1", "random_data: true"))
    )
    spec = parse_config(
        simple_string_config(extra=f'model_warmup [ {{ name: "s" batch_size: 2 {inputs} }} ]'), folder
    )
    arrays = spec.warmup[0].arrays()
    assert arrays["INPUT0"].shape == (2, 16) and list(arrays["INPUT0"][1]) == items
    random_text = arrays["INPUT1"].reshape(-1)
    assert all(isinstance(t, bytes) and t and t.isascii() and t.decode().isprintable() for t in random_text)
    zeros = default_sample(spec.inputs, spec.max_batch_size).arrays()
    assert zeros["INPUT0"].shape == (1, 16) and set(zeros["INPUT0"].reshape(-1)) == {b"0"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            'batch_size: 1 inputs { key: "x" value: { data_type: TYPE_INT32 dims: [2, 1] zero_data: true } }',
            r"model_warmup\[0\]\.name is required",
        ),
        (
            'name: "w" batch_size: 9 inputs { key: "x" value: { data_type: TYPE_INT32 dims: [2, 1] zero_data: true } }',
            r"model_warmup\[0\] 'w'\.batch_size 9 exceeds max_batch_size 4",
        ),
        (
            'name: "w" inputs { key: "q" value: { data_type: TYPE_INT32 dims: [2, 1] zero_data: true } }',
            r"model_warmup\[0\] 'w'\.inputs: \['q'\] are not inputs",
        ),
        (
            'name: "w" inputs { key: "x" value: { data_type: TYPE_FP32 dims: [2, 1] zero_data: true } }',
            r"inputs\['x'\]\.data_type TYPE_FP32 does not match the input's INT32",
        ),
        (
            'name: "w" inputs { key: "x" value: { data_type: TYPE_INT32 dims: [3, 1] zero_data: true } }',
            r"inputs\['x'\]\.dims \[3, 1\] do not fit the input's dims \[2, -1\]",
        ),
        (
            'name: "w" inputs { key: "x" value: { data_type: TYPE_INT32 dims: [2, 1] } }',
            r"inputs\['x'\]: set one of zero_data, random_data or input_data_file",
        ),
        (
            'name: "w" inputs { key: "x" value: { data_type: TYPE_INT32 dims: [2, 1] input_data_file: "../config.pbtxt" } }',
            r"inputs\['x'\]\.input_data_file '\.\./config\.pbtxt' must name a file inside .*/m/warmup",
        ),
        (
            'name: "w" inputs { key: "x" value: { data_type: TYPE_INT32 dims: [2, 1] input_data_file: "none" } }',
            r"input_data_file 'none': cannot read",
        ),
        (
            'name: "w" inputs { key: "x" value: { data_type: TYPE_INT32 dims: [2, 1] input_data_file: "short" } }',
            r"input_data_file holds 3 bytes, INT32 \[2, 1\] needs 8",
        ),
    ],
)
def test_bad_warmup_names_the_file_and_field(tmp_path: Path, body: str, message: str) -> None:
    folder = model_folder(tmp_path, files={"warmup/short": b"abc"})
    with pytest.raises(ModelConfigError, match=rf"^{tmp_path}/m/config\.pbtxt: .*{message}"):
        parse_config(warmup(body), folder)


def test_warmup_without_an_input_or_batching_mismatch_is_refused(tmp_path: Path) -> None:
    folder = model_folder(tmp_path, "simple_string")
    one = 'inputs { key: "INPUT0" value: { data_type: TYPE_STRING dims: [16] zero_data: true } }'
    with pytest.raises(ModelConfigError, match=r"no data for required inputs \['INPUT1'\]"):
        parse_config(simple_string_config(extra=f'model_warmup [ {{ name: "w" {one} }} ]'), folder)
    unbatched = NUMBERS.replace("max_batch_size: 4", "max_batch_size: 0")
    body = 'name: "w" batch_size: 2 inputs { key: "x" value: { data_type: TYPE_INT32 dims: [2, 1] zero_data: true } }'
    with pytest.raises(ModelConfigError, match=r"batch_size 2: the model does not batch"):
        parse_config(unbatched + f"model_warmup [ {{ {body} }} ]", folder.parent / "m")


def test_bytes_file_must_hold_exactly_the_elements(tmp_path: Path) -> None:
    folder = model_folder(
        tmp_path, "simple_string", {"warmup/few": serialized([b"1"] * 3), "warmup/cut": b"\x05\x00"}
    )
    for name, message in (
        ("few", "holds 3 strings, dims \\[16\\] need 16"),
        ("cut", "truncated length prefix"),
    ):
        inputs = "".join(
            f'inputs {{ key: "{i}" value: {{ data_type: TYPE_STRING dims: [16] input_data_file: "{name}" }} }} '
            for i in ("INPUT0", "INPUT1")
        )
        with pytest.raises(ModelConfigError, match=message):
            parse_config(simple_string_config(extra=f'model_warmup [ {{ name: "w" {inputs} }} ]'), folder)
    assert deserialize_bytes(serialized([b"", b"a\x00b"])) == [b"", b"a\x00b"]


def test_densenet_config_reshape_labels_and_format(tmp_path: Path) -> None:
    folder = model_folder(
        tmp_path, "densenet_onnx", {"densenet_labels.txt": b"TENCH\nGOLDFISH\n\xc3\xa9tui\n"}
    )
    spec = parse_config(DENSENET_LIKE_CONFIG, folder)
    (data,) = spec.inputs
    (out,) = spec.outputs
    assert (data.dims, data.reshape, data.model_dims, data.format) == (
        (3, 4, 4),
        (1, 3, 4, 4),
        (1, 3, 4, 4),
        "FORMAT_NCHW",
    )
    assert (out.dims, out.reshape, out.model_dims) == ((1000,), (1, 1000, 1, 1), (1, 1000, 1, 1))
    assert out.labels == ("TENCH", "GOLDFISH", "étui")
    assert spec.config.input[0].format == spec.config.input[0].FORMAT_NCHW  # passed through to ModelConfig


@pytest.mark.parametrize(
    ("replace", "message"),
    [
        (
            ("shape: [ 1, 1000, 1, 1 ]", "shape: [ 1, 999 ]"),
            r"output\[0\] 'fc6_1': reshape.shape \[1, 999\] has 999 elements, dims \[1000\] have 1000",
        ),
        (
            ("shape: [ 1, 3, 4, 4 ]", "shape: [ 0, 48 ]"),
            r"input\[0\] 'data_0': reshape.shape must be positive",
        ),
        (
            ("dims: [ 3, 4, 4 ]", "dims: [ 3, -1 ]"),
            r"input\[0\] 'data_0': reshape.shape \[1, 3, 4, 4\] and dims",
        ),
        (
            ('"densenet_labels.txt"', '"missing.txt"'),
            r"output\[0\] 'fc6_1': label_filename 'missing.txt': cannot read",
        ),
        (
            ('"densenet_labels.txt"', '"../secrets.txt"'),
            r"output\[0\] 'fc6_1': label_filename '\.\./secrets\.txt' must be inside the model",
        ),
    ],
)
def test_bad_reshape_or_labels_name_the_field(tmp_path: Path, replace: tuple[str, str], message: str) -> None:
    (tmp_path / "secrets.txt").write_text("a\n")
    folder = model_folder(tmp_path, "densenet_onnx", {"densenet_labels.txt": b"a\n"})
    with pytest.raises(ModelConfigError, match=rf"densenet_onnx/config\.pbtxt: {message}"):
        parse_config(DENSENET_LIKE_CONFIG.replace(*replace), folder)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            "dynamic_batching { preserve_ordering: true }",
            r"dynamic_batching\.preserve_ordering is not supported",
        ),
        ("sequence_batching { }", r'has no field named "sequence_batching"'),
        ("optimization { }", r'has no field named "optimization"'),
    ],
)
def test_unsupported_fields_are_refused_by_name(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(ModelConfigError, match=rf"m/config\.pbtxt: .*{message}"):
        parse_config(NUMBERS + extra, model_folder(tmp_path))


def test_instance_group_name_is_accepted(tmp_path: Path) -> None:
    spec = parse_config(
        NUMBERS + 'instance_group [ { name: "cpu_pair" count: 2 kind: KIND_CPU } ]', model_folder(tmp_path)
    )
    assert spec.instance_groups[0].count == 2


@pytest.mark.parametrize("type_name", ["BOOL", "UINT8", "INT8", "UINT64", "FP16", "FP64"])
def test_random_warmup_data_fits_every_type(tmp_path: Path, type_name: str) -> None:
    text = NUMBERS.replace("TYPE_INT32", f"TYPE_{type_name}") + (
        f'model_warmup [ {{ name: "r" batch_size: 4 '
        f'inputs {{ key: "x" value: {{ data_type: TYPE_{type_name} dims: [2, 50] random_data: true }} }} }} ]'
    )
    values = parse_config(text, model_folder(tmp_path)).warmup[0].arrays()["x"]
    assert values.shape == (4, 2, 50) and values.dtype == np.dtype(type_name.lower().replace("fp", "float"))
    assert len(np.unique(values)) > 1 and np.isfinite(values.astype(np.float64)).all()
