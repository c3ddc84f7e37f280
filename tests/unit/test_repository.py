"""config.pbtxt parsing and version selection: good configs parse, bad ones name the file and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.errors import ModelConfigError
from serving.lifecycle.repository import (
    ModelRepository,
    ModelSpec,
    VersionSource,
    parse_config,
    select_versions,
    version_numbers,
    version_source,
)
from serving.proto import model_config_pb2 as mc
from tests.model_factory import add_model_config, write_add_repository

GOOD = """
name: "m"
max_batch_size: 16
input [ { name: "in" data_type: TYPE_FP32 dims: [ 3, -1 ] } ]
output [ { name: "out" data_type: TYPE_INT64 dims: [ 1 ] } ]
dynamic_batching {
  preferred_batch_size: [ 8, 4 ]
  max_queue_delay_microseconds: 250
  default_queue_policy { max_queue_size: 7 default_timeout_microseconds: 1500 allow_timeout_override: true }
}
instance_group [ { count: 2 kind: KIND_CPU }, { kind: KIND_GPU gpus: [ 0, 1 ] } ]
parameters { key: "precision" value: { string_value: "fp16" } }
"""


def selected_sources(spec: ModelSpec) -> list[VersionSource]:
    """What the registry loads: the version policy over the numeric folders, each with its model file."""
    available = version_numbers(spec.path)
    return [version_source(spec, v) for v in select_versions(spec.config.version_policy, available)]


def parse(text: str, name: str = "m") -> object:
    return parse_config(text, Path("/repo") / name)


def test_good_config_parses_every_supported_field() -> None:
    spec = parse_config(GOOD, Path("/repo/m"))
    assert spec.max_batch_size == 16
    assert (
        spec.inputs[0].name == "in" and spec.inputs[0].datatype == "FP32" and spec.inputs[0].dims == (3, -1)
    )
    assert spec.outputs[0].datatype == "INT64"
    db = spec.dynamic_batching
    assert db is not None
    assert db.preferred_batch_sizes == (4, 8)
    assert db.max_queue_delay_s == pytest.approx(250e-6)
    assert db.queue.max_queue_size == 7
    assert db.queue.default_timeout_s == pytest.approx(1.5e-3)
    assert db.queue.allow_timeout_override
    assert [(g.kind, g.count, g.gpus) for g in spec.instance_groups] == [
        ("KIND_CPU", 2, ()),
        ("KIND_GPU", 1, (0, 1)),
    ]
    assert spec.parameters == {"precision": "fp16"}
    assert spec.platform == ""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('name: "m" max_batch_size: 2 inputt [ ]', "inputt"),
        (
            'name: "other" input [ { name: "a" data_type: TYPE_FP32 dims: [1] } ] output [ { name: "b" data_type: TYPE_FP32 dims: [1] } ]',
            "differs from its folder",
        ),
        ('name: "m" output [ { name: "b" data_type: TYPE_FP32 dims: [1] } ]', "input: at least one"),
        (
            'name: "m" input [ { name: "a" data_type: TYPE_FP32 dims: [0] } ] output [ { name: "b" data_type: TYPE_FP32 dims: [1] } ]',
            "input[0] 'a': dims",
        ),
        (
            'name: "m" input [ { name: "a" data_type: TYPE_BF16 dims: [1] } ] output [ { name: "b" data_type: TYPE_FP32 dims: [1] } ]',
            "TYPE_BF16 is not supported",
        ),
        (
            'name: "m" input [ { name: "a" data_type: TYPE_FP32 dims: [1] }, { name: "a" data_type: TYPE_FP32 dims: [1] } ] output [ { name: "b" data_type: TYPE_FP32 dims: [1] } ]',
            "duplicate names ['a']",
        ),
        (
            'name: "m" platform: "tensorflow_savedmodel" input [ { name: "a" data_type: TYPE_FP32 dims: [1] } ] output [ { name: "b" data_type: TYPE_FP32 dims: [1] } ]',
            "platform 'tensorflow_savedmodel'",
        ),
        (
            'name: "m" backend: "python" input [ { name: "a" data_type: TYPE_FP32 dims: [1] } ] output [ { name: "b" data_type: TYPE_FP32 dims: [1] } ]',
            "backend 'python'",
        ),
        (
            'name: "m" max_batch_size: 4 input [ { name: "a" data_type: TYPE_FP32 dims: [1] } ] output [ { name: "b" data_type: TYPE_FP32 dims: [1] } ] dynamic_batching { preferred_batch_size: [ 8 ] }',
            "preferred_batch_size [8]",
        ),
        (
            'name: "m" input [ { name: "a" data_type: TYPE_FP32 dims: [1] } ] output [ { name: "b" data_type: TYPE_FP32 dims: [1] } ] dynamic_batching { }',
            "needs max_batch_size > 0",
        ),
        (
            'name: "m" input [ { name: "a" data_type: TYPE_FP32 dims: [1] } ] output [ { name: "b" data_type: TYPE_FP32 dims: [1] } ] instance_group [ { kind: KIND_CPU gpus: [0] } ]',
            "instance_group[0]: gpus given with kind KIND_CPU",
        ),
        (
            'name: "m" max_batch_size: -1 input [ { name: "a" data_type: TYPE_FP32 dims: [1] } ] output [ { name: "b" data_type: TYPE_FP32 dims: [1] } ]',
            "max_batch_size must be >= 0",
        ),
    ],
)
def test_bad_config_names_file_and_field(text: str, expected: str) -> None:
    with pytest.raises(ModelConfigError) as info:
        parse_config(text, Path("/repo/m"))
    message = str(info.value)
    assert message.startswith("/repo/m/config.pbtxt:"), message
    assert expected in message, message


def test_name_defaults_to_folder() -> None:
    spec = parse_config(
        'input [ { name: "a" data_type: TYPE_FP32 dims: [1] } ] output [ { name: "b" data_type: TYPE_FP32 dims: [1] } ]',
        Path("/r/folder"),
    )
    assert spec.name == "folder"


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("", [5]),
        ("latest { num_versions: 2 }", [3, 5]),
        ("all { }", [1, 3, 5]),
        ("specific { versions: [ 1, 4, 5 ] }", [1, 5]),
    ],
)
def test_version_policy(policy: str, expected: list[int]) -> None:
    from google.protobuf import text_format

    parsed = mc.ModelVersionPolicy()
    text_format.Parse(policy, parsed)
    assert select_versions(parsed, [1, 3, 5]) == expected


def test_repository_finds_versions_and_model_files(tmp_path: Path) -> None:
    write_add_repository(tmp_path, versions=(1, 2))
    (tmp_path / "add" / "notaversion").mkdir()
    (tmp_path / "stray").mkdir()  # no config.pbtxt: not a model
    repo = ModelRepository(tmp_path)
    assert repo.model_names() == ["add"]
    spec = repo.read("add")
    sources = selected_sources(spec)
    assert [(s.version, s.model_file.name, s.platform) for s in sources] == [
        (1, "model.onnx", "onnxruntime_onnx"),
        (2, "model.onnx", "onnxruntime_onnx"),
    ]


def test_version_without_model_file_names_folder(tmp_path: Path) -> None:
    write_add_repository(tmp_path, versions=(1,))
    (tmp_path / "add" / "2").mkdir()
    repo = ModelRepository(tmp_path)
    with pytest.raises(ModelConfigError, match=r"add/2: no model file"):
        selected_sources(repo.read("add"))


def test_platform_must_match_file(tmp_path: Path) -> None:
    write_add_repository(tmp_path, config=add_model_config("add", extra='platform: "pytorch_libtorch"'))
    repo = ModelRepository(tmp_path)
    with pytest.raises(ModelConfigError, match="platform pytorch_libtorch expects model.pt"):
        selected_sources(repo.read("add"))


@pytest.mark.parametrize(
    ("backend", "platform"),
    [("onnxruntime", "onnxruntime_onnx"), ("pytorch", "pytorch_libtorch"), ("torch_export", "torch_export")],
)
def test_triton_backend_names_are_platform_aliases(backend: str, platform: str) -> None:
    text = GOOD.replace('name: "m"', f'name: "m" backend: "{backend}"')
    assert parse_config(text, Path("/repo/m")).platform == platform
    both = GOOD.replace('name: "m"', f'name: "m" backend: "{backend}" platform: "{platform}"')
    assert parse_config(both, Path("/repo/m")).platform == platform


@pytest.mark.parametrize(
    ("filename", "platform"),
    [("net.onnx", "onnxruntime_onnx"), ("net.pt", "pytorch_libtorch"), ("net.pt2", "torch_export")],
)
def test_default_model_filename_suffix_names_the_platform(
    tmp_path: Path, filename: str, platform: str
) -> None:
    config = add_model_config("add", extra=f'default_model_filename: "{filename}"')
    write_add_repository(tmp_path, versions=(), config=config)
    (tmp_path / "add" / "1").mkdir()
    (tmp_path / "add" / "1" / filename).write_bytes(b"")
    [source] = selected_sources(ModelRepository(tmp_path).read("add"))
    assert (source.model_file.name, source.platform) == (filename, platform)


def test_default_model_filename_with_an_unknown_suffix_needs_a_platform(tmp_path: Path) -> None:
    config = add_model_config("add", extra='default_model_filename: "net.savedmodel"')
    write_add_repository(tmp_path, versions=(), config=config)
    (tmp_path / "add" / "1").mkdir()
    (tmp_path / "add" / "1" / "net.savedmodel").write_bytes(b"")
    with pytest.raises(ModelConfigError, match="net.savedmodel: cannot tell the platform from the suffix"):
        selected_sources(ModelRepository(tmp_path).read("add"))
