"""RepositoryModelLoad's overrides, as Triton's model control extension defines them.

`config`: a JSON string of the model's ModelConfig (protobuf's JSON mapping, strictly: an unknown field is
refused by name) that replaces config.pbtxt for that load. `file:<path>`: a file of the model (e.g.
`file:1/model.onnx`), written to a private temporary model folder that the model loads from instead of
its repository folder; with files, `config` is required (as in Triton). Paths stay inside that folder:
absolute paths, `..` and anything resolving outside are refused. Sizes are bounded by the transport's
message size. Every refusal is InvalidInput, raised before anything changes.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from google.protobuf import json_format, text_format

from serving.errors import InvalidInput, ModelConfigError
from serving.lifecycle.repository import CONFIG_FILE, ModelSpec, parse_config
from serving.proto import model_config_pb2 as mc
from serving.quoting import clip

FILE_PREFIX = "file:"
CONFIG_PARAMETER = "config"


@dataclass(frozen=True)
class LoadOverride:
    config: str | None = None  # the JSON text of a ModelConfig
    files: dict[str, bytes] = field(default_factory=dict)  # "file:<relative path>" → contents

    @property
    def empty(self) -> bool:
        return self.config is None and not self.files


def parse_override_config(name: str, text: str) -> mc.ModelConfig:
    config = mc.ModelConfig()
    try:
        json_format.Parse(text, config, ignore_unknown_fields=False)
    except json_format.ParseError as exc:
        raise InvalidInput(f"failed to load '{clip(name)}': invalid config override: {exc}") from None
    return config


def relative_file(name: str, key: str) -> PurePosixPath:
    """The path of a `file:` parameter, relative and without `..`; InvalidInput otherwise."""
    raw = key[len(FILE_PREFIX) :]
    path = PurePosixPath(raw)
    if not raw or raw.startswith(("/", "\\")) or path.is_absolute() or ":" in raw or "\\" in raw:
        raise InvalidInput(f"failed to load '{clip(name)}': '{clip(key)}' must be a relative path")
    if any(part in ("..", ".") for part in raw.split("/")) or not path.parts:
        raise InvalidInput(f"failed to load '{clip(name)}': '{clip(key)}' must not contain '.' or '..'")
    return path


def spec_from_override(
    name: str, override: LoadOverride, repository_folder: Path
) -> tuple[ModelSpec, Path | None]:
    """The spec to load `name` from, and the temporary folder made for its files (None without files).
    The folder is removed again if anything is refused."""
    if not name or name in (".", "..") or any(c in name for c in "/\\\0"):
        raise InvalidInput(f"failed to load '{clip(name)}': a model name must be one folder name")
    if override.config is None:
        raise InvalidInput(
            f"failed to load '{clip(name)}': the 'config' parameter must be given with 'file:' parameters"
        )
    config = parse_override_config(name, override.config)
    paths = {key: relative_file(name, key) for key in override.files}
    if not paths:
        return _parse(name, config, repository_folder), None
    temporary = Path(tempfile.mkdtemp(prefix="serving-override-"))
    try:
        folder = temporary / name
        folder.mkdir()
        for key, path in paths.items():
            _write_inside(folder, path, override.files[key], name, key)
        return _parse(name, config, folder), temporary
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def _write_inside(folder: Path, path: PurePosixPath, data: bytes, name: str, key: str) -> None:
    target = (folder / path).resolve()
    if not target.is_relative_to(folder.resolve()) or target == folder.resolve():
        where = f"failed to load '{clip(name)}': '{clip(key)}'"
        raise InvalidInput(f"{where} resolves outside the model folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)


def _parse(name: str, config: mc.ModelConfig, folder: Path) -> ModelSpec:
    try:
        return parse_config(text_format.MessageToString(config), folder)
    except ModelConfigError as exc:
        where = str(folder / CONFIG_FILE)
        reason = str(exc).replace(where, "config override", 1)
        raise InvalidInput(f"failed to load '{clip(name)}': {reason}") from None
