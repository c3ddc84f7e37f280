"""Names and paths that reach the file system cannot escape the model repository (docs/security.md)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from serving.errors import ModelConfigError
from serving.lifecycle.repository import ModelRepository, check_model_name, version_source
from tests.model_factory import add_model_config, write_add_model, write_add_repository


@pytest.mark.parametrize("name", ["", ".", "..", "../x", "/etc", "a/b", "a\\b", "x\0y"])
def test_a_model_name_is_one_folder_name(name: str) -> None:
    with pytest.raises(ModelConfigError, match="is not a model name"):
        check_model_name(name)


@pytest.mark.parametrize("name", ["../outside", "/tmp", "sub/model"])
def test_reading_a_name_outside_the_repository_is_refused(tmp_path: Path, name: str) -> None:
    write_add_repository(tmp_path / "outside", "m")  # a real model, one level up from the repository
    repo = write_add_repository(tmp_path / "repo", "m")
    with pytest.raises(ModelConfigError, match="is not a model name"):
        ModelRepository(repo).read(name)


def test_a_model_folder_linked_outside_is_refused(tmp_path: Path) -> None:
    write_add_repository(tmp_path / "elsewhere", "m")
    repo = tmp_path / "repo"
    repo.mkdir()
    os.symlink(tmp_path / "elsewhere" / "m", repo / "m")
    with pytest.raises(ModelConfigError, match="model folder resolves to .* outside the model repository"):
        ModelRepository(repo).read("m")


def test_links_inside_the_repository_are_fine(tmp_path: Path) -> None:
    repo = write_add_repository(tmp_path / "repo", "m")
    os.symlink(repo / "m", repo / "alias")  # the same model under a second name: inside the repository
    (repo / "m" / "config.pbtxt").write_text(add_model_config(""))  # name from the folder
    spec = ModelRepository(repo).read("alias")
    assert version_source(spec, 1).model_file.resolve() == (repo / "m" / "1" / "model.onnx").resolve()


def test_a_version_folder_linked_outside_is_refused(tmp_path: Path) -> None:
    write_add_model(tmp_path / "elsewhere" / "model.onnx")
    repo = write_add_repository(tmp_path / "repo", "m", versions=())
    os.symlink(tmp_path / "elsewhere", repo / "m" / "1")
    spec = ModelRepository(repo).read("m")
    with pytest.raises(ModelConfigError, match="version folder resolves to .* outside"):
        version_source(spec, 1)


def test_a_model_file_linked_outside_is_refused(tmp_path: Path) -> None:
    write_add_model(tmp_path / "elsewhere" / "model.onnx")
    repo = write_add_repository(tmp_path / "repo", "m", versions=())
    (repo / "m" / "1").mkdir()
    os.symlink(tmp_path / "elsewhere" / "model.onnx", repo / "m" / "1" / "model.onnx")
    spec = ModelRepository(repo).read("m")
    with pytest.raises(ModelConfigError, match="model file resolves to .* outside"):
        version_source(spec, 1)


@pytest.mark.parametrize("filename", ["../../other/1/model.onnx", "/etc/passwd", "sub/model.onnx", ".."])
def test_default_model_filename_is_a_plain_file_name(tmp_path: Path, filename: str) -> None:
    config = add_model_config("m", extra=f'default_model_filename: "{filename}"')
    repo = write_add_repository(tmp_path / "repo", "m", config=config)
    with pytest.raises(ModelConfigError, match="default_model_filename .* must be a plain file name"):
        ModelRepository(repo).read("m")


def test_label_and_warmup_files_stay_in_the_model_folder(tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("a\nb\n")
    output = 'output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } ]'
    labels = add_model_config("m").replace(
        output, output.replace("] }", '] label_filename: "../../secret.txt" }')
    )
    assert "label_filename" in labels
    repo = write_add_repository(tmp_path / "repo", "m", config=labels)
    with pytest.raises(ModelConfigError, match="must be inside the model folder"):
        ModelRepository(repo).read("m")
    warmup = add_model_config(
        "m",
        extra='model_warmup [ { name: "w" batch_size: 1 inputs { key: "x" value: '
        '{ data_type: TYPE_FP32 dims: [ 4 ] input_data_file: "../../../secret.txt" } } } ]',
    )
    (repo / "m" / "config.pbtxt").write_text(warmup)
    with pytest.raises(ModelConfigError, match="must name a file inside"):
        ModelRepository(repo).read("m")
