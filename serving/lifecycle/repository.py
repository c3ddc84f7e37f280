"""Reading a Triton-layout model repository: `<repo>/<model>/config.pbtxt` + numeric version folders.

This module reads and validates; it never loads a model. Every error is a ModelConfigError whose
message starts with the file it is about and names the field, so an operator can fix it without
guessing. One model's bad config never affects another model.

Nothing read here escapes the repository (docs/security.md): a model name is one folder name; a model
folder, version folder and model file must resolve (symlinks followed) inside the repository root;
`default_model_filename` is a plain file name; label and warm-up files stay inside the model folder.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import text_format

from serving.backends.base import Backend, Placement
from serving.backends.platforms import BACKEND_ALIASES, MODEL_FILENAMES, SUFFIX_PLATFORMS
from serving.errors import ModelConfigError
from serving.lifecycle.warmup import WarmupSample, parse_warmup
from serving.proto import model_config_pb2 as mc
from serving.quoting import clip
from serving.types import CONFIG_TO_V2, V2_TO_NUMPY

CONFIG_FILE = "config.pbtxt"


@dataclass(frozen=True)
class TensorSpec:
    """One input or output as config.pbtxt declares it; `dims` exclude the batch dimension."""

    name: str
    datatype: str  # KServe v2 name, e.g. "FP32"
    dims: tuple[int, ...]
    optional: bool = False
    reshape: tuple[int, ...] | None = None  # the shape the model itself takes/produces (`reshape`)
    labels: tuple[str, ...] = ()  # an output's `label_filename`, one label per line
    format: str = "FORMAT_NONE"  # an input's `format`: image layout metadata for clients, unused here

    @property
    def model_dims(self) -> tuple[int, ...]:
        """The dims the model itself sees: `reshape` when given, else `dims` (batch dimension excluded)."""
        return self.dims if self.reshape is None else self.reshape

    @property
    def dtype(self) -> np.dtype[Any]:
        return V2_TO_NUMPY[self.datatype]


@dataclass(frozen=True)
class InstanceGroupSpec:
    kind: str  # KIND_AUTO | KIND_GPU | KIND_CPU
    count: int
    gpus: tuple[int, ...]


@dataclass(frozen=True)
class QueuePolicySpec:
    max_queue_size: int = 0
    default_timeout_s: float | None = None
    allow_timeout_override: bool = False


@dataclass(frozen=True)
class DynamicBatchingSpec:
    preferred_batch_sizes: tuple[int, ...]
    max_queue_delay_s: float
    queue: QueuePolicySpec


@dataclass(frozen=True)
class ModelSpec:
    """A validated config.pbtxt."""

    name: str
    path: Path  # the model's folder
    config: mc.ModelConfig
    platform: str  # "" = chosen per version from the model file present
    max_batch_size: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    dynamic_batching: DynamicBatchingSpec | None
    instance_groups: tuple[InstanceGroupSpec, ...]
    parameters: dict[str, str]
    warmup: tuple[WarmupSample, ...] = ()  # `model_warmup`; empty = the built-in sample

    @functools.cached_property
    def input_names(self) -> frozenset[str]:
        """The declared inputs' names, built once (request checks look names up in it)."""
        return frozenset(t.name for t in self.inputs)


@dataclass(frozen=True)
class VersionSource:
    """A version folder selected by the version policy, and the model file it holds."""

    version: int
    path: Path
    model_file: Path
    platform: str


# Loads one instance of a version's model onto a placement (the server's create_backend call).
BackendLoader = Callable[[VersionSource, ModelSpec, Placement], Backend]


class ModelRepository:
    def __init__(self, root: Path) -> None:
        self.root = root

    def model_names(self) -> list[str]:
        """Folders that hold a config.pbtxt, sorted."""
        if not self.root.is_dir():
            raise ModelConfigError(f"{self.root}: model repository is not a directory")
        return sorted(p.name for p in self.root.iterdir() if (p / CONFIG_FILE).is_file())

    def read(self, name: str) -> ModelSpec:
        check_model_name(name)
        folder = self.root / name
        inside_repository(folder, self.root, "model folder")
        config_file = folder / CONFIG_FILE
        if not config_file.is_file():
            raise ModelConfigError(f"{config_file}: no such file")
        return parse_config(config_file.read_text(), folder)


def check_model_name(name: str) -> None:
    """A model name is one folder name of the repository: not empty, '.', '..', nor holding a separator."""
    if not name or name in (".", "..") or any(c in name for c in "/\\\0"):
        raise ModelConfigError(f"'{clip(name)}' is not a model name (one folder name of the repository)")


def inside_repository(path: Path, root: Path, what: str) -> Path:
    """`path` with symlinks resolved; ModelConfigError when that lies outside the repository `root`."""
    resolved, base = path.resolve(), root.resolve()
    if not resolved.is_relative_to(base):
        raise ModelConfigError(
            f"{path}: the {what} resolves to {resolved}, outside the model repository {base}"
        )
    return resolved


def version_numbers(folder: Path) -> list[int]:
    """The numeric version folders (1, 2, …) of a model folder, ascending."""
    return sorted(
        int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit() and int(p.name) > 0
    )


def select_versions(policy: mc.ModelVersionPolicy, available: list[int]) -> list[int]:
    """Triton's version policies; the default (none set) is `latest { num_versions: 1 }`."""
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return available
    if choice == "specific":
        wanted = set(policy.specific.versions)
        return [v for v in available if v in wanted]
    count = policy.latest.num_versions if choice == "latest" else 1
    return available[-max(count, 1) :] if available else []


def version_source(spec: ModelSpec, version: int) -> VersionSource:
    """The version's model file; the folder and file must resolve inside the repository (the model
    folder's parent: the repository root, or the private folder of a load override)."""
    folder = spec.path / str(version)
    inside_repository(folder, spec.path.parent, "version folder")
    source = _version_file(spec, version, folder)
    inside_repository(source.model_file, spec.path.parent, "model file")
    return source


def _version_file(spec: ModelSpec, version: int, folder: Path) -> VersionSource:
    where = f"{folder}"
    if spec.config.default_model_filename:
        model_file = folder / spec.config.default_model_filename
        if not model_file.is_file():
            raise ModelConfigError(f"{where}: default_model_filename '{model_file.name}' not found")
        platform = spec.platform or SUFFIX_PLATFORMS.get(model_file.suffix, "")
        if not platform:
            raise ModelConfigError(f"{model_file}: cannot tell the platform from the suffix; set platform")
        return VersionSource(version, folder, model_file, platform)
    if spec.platform:
        model_file = folder / MODEL_FILENAMES[spec.platform]
        if not model_file.is_file():
            raise ModelConfigError(f"{where}: platform {spec.platform} expects {model_file.name}, not found")
        return VersionSource(version, folder, model_file, spec.platform)
    for platform, filename in MODEL_FILENAMES.items():
        if (folder / filename).is_file():
            return VersionSource(version, folder, folder / filename, platform)
    expected = ", ".join(MODEL_FILENAMES.values())
    raise ModelConfigError(f"{where}: no model file (expected one of {expected})")


def parse_config(text: str, folder: Path) -> ModelSpec:
    """Parse and validate config.pbtxt text for the model in `folder`."""
    where = folder / CONFIG_FILE
    config = mc.ModelConfig()
    try:
        text_format.Parse(text, config)
    except (text_format.ParseError, ValueError) as exc:  # ValueError: an enum number out of range
        raise ModelConfigError(f"{where}: {exc}") from None
    if not config.name:
        config.name = folder.name
    elif config.name != folder.name:
        raise ModelConfigError(f"{where}: name '{config.name}' differs from its folder '{folder.name}'")
    if config.max_batch_size < 0:
        raise ModelConfigError(f"{where}: max_batch_size must be >= 0, got {config.max_batch_size}")
    _check_tensors(config, where)
    _check_file_name(config.default_model_filename, "default_model_filename", where)
    inputs = tuple(_tensor(t, f"input[{i}]", where) for i, t in enumerate(config.input))
    return ModelSpec(
        name=config.name,
        path=folder,
        config=config,
        platform=_platform(config, where),
        max_batch_size=config.max_batch_size,
        inputs=inputs,
        outputs=tuple(_output(t, f"output[{i}]", folder, where) for i, t in enumerate(config.output)),
        dynamic_batching=_dynamic_batching(config, where),
        instance_groups=_instance_groups(config, where),
        parameters={k: v.string_value for k, v in config.parameters.items()},
        warmup=parse_warmup(config, inputs, folder, where),
    )


def _check_tensors(config: mc.ModelConfig, where: Path) -> None:
    for field, tensors in (("input", config.input), ("output", config.output)):
        if not tensors:
            raise ModelConfigError(f"{where}: {field}: at least one {field} is required")
        names = [t.name for t in tensors]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ModelConfigError(f"{where}: {field}: duplicate names {duplicates}")


def _check_file_name(name: str, field: str, where: Path) -> None:
    """A file name inside the version folder: no separators, not '.' or '..' ("" = not set)."""
    if name and (name in (".", "..") or any(c in name for c in "/\\\0")):
        raise ModelConfigError(
            f"{where}: {field} '{clip(name)}' must be a plain file name inside the version folder"
        )


def _platform(config: mc.ModelConfig, where: Path) -> str:
    platform = config.platform
    if config.backend:
        alias = BACKEND_ALIASES.get(config.backend)
        if alias is None:
            raise ModelConfigError(
                f"{where}: backend '{config.backend}' is not supported (use one of {sorted(BACKEND_ALIASES)})"
            )
        if platform and platform != alias:
            raise ModelConfigError(f"{where}: platform '{platform}' contradicts backend '{config.backend}'")
        platform = alias
    if platform and platform not in MODEL_FILENAMES:
        raise ModelConfigError(
            f"{where}: platform '{platform}' is not supported (use one of {sorted(MODEL_FILENAMES)})"
        )
    return platform


def _tensor(t: mc.ModelInput | mc.ModelOutput, field: str, where: Path) -> TensorSpec:
    if not t.name:
        raise ModelConfigError(f"{where}: {field}.name is required")
    type_name = mc.DataType.Name(t.data_type)
    datatype = CONFIG_TO_V2.get(type_name)
    if datatype is None:
        raise ModelConfigError(f"{where}: {field} '{t.name}': data_type {type_name} is not supported")
    dims = tuple(int(d) for d in t.dims)
    if any(d == 0 or d < -1 for d in dims):
        raise ModelConfigError(f"{where}: {field} '{t.name}': dims must be positive or -1, got {list(dims)}")
    reshape = _reshape(t, dims, f"{field} '{t.name}'", where) if t.HasField("reshape") else None
    if isinstance(t, mc.ModelInput):
        layout = mc.ModelInput.Format.Name(t.format)
        return TensorSpec(t.name, datatype, dims, t.optional, reshape, format=layout)
    return TensorSpec(t.name, datatype, dims, reshape=reshape)


def _output(t: mc.ModelOutput, field: str, folder: Path, where: Path) -> TensorSpec:
    tensor = _tensor(t, field, where)
    if not t.label_filename:
        return tensor
    labels = _read_labels(folder, t.label_filename, f"{field} '{t.name}': label_filename", where)
    return replace(tensor, labels=labels)


def _reshape(
    t: mc.ModelInput | mc.ModelOutput, dims: tuple[int, ...], field: str, where: Path
) -> tuple[int, ...]:
    """Triton's `reshape`: the model's own shape for the tensor; element counts must agree."""
    shape = tuple(int(d) for d in t.reshape.shape)
    if any(d == 0 or d < -1 for d in shape) or shape.count(-1) > 1:
        raise ModelConfigError(
            f"{where}: {field}: reshape.shape must be positive, with at most one -1, got {list(shape)}"
        )
    if -1 in dims or -1 in shape:
        if (-1 in dims) != (-1 in shape):
            raise ModelConfigError(
                f"{where}: {field}: reshape.shape {list(shape)} and dims {list(dims)} must both be "
                "variable (-1) or both fixed"
            )
        return shape
    if int(np.prod(shape)) != int(np.prod(dims)):
        raise ModelConfigError(
            f"{where}: {field}: reshape.shape {list(shape)} has {int(np.prod(shape))} elements, "
            f"dims {list(dims)} have {int(np.prod(dims))}"
        )
    return shape


def _read_labels(folder: Path, name: str, field: str, where: Path) -> tuple[str, ...]:
    """An output's label file, from the model's folder: one label per line."""
    base = folder.resolve()
    path = (base / name).resolve()
    if not path.is_relative_to(base):
        raise ModelConfigError(f"{where}: {field} '{name}' must be inside the model folder {base}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
        raise ModelConfigError(f"{where}: {field} '{name}': cannot read {path}: {reason}") from None
    return tuple(text.splitlines())


def _dynamic_batching(config: mc.ModelConfig, where: Path) -> DynamicBatchingSpec | None:
    if config.WhichOneof("scheduling_choice") != "dynamic_batching":
        return None
    db = config.dynamic_batching
    if config.max_batch_size == 0:
        raise ModelConfigError(f"{where}: dynamic_batching needs max_batch_size > 0")
    preferred = tuple(int(s) for s in db.preferred_batch_size)
    bad = [s for s in preferred if s <= 0 or s > config.max_batch_size]
    if bad:
        raise ModelConfigError(
            f"{where}: dynamic_batching.preferred_batch_size {bad} must be within 1..max_batch_size "
            f"({config.max_batch_size})"
        )
    if db.preserve_ordering:
        raise ModelConfigError(
            f"{where}: dynamic_batching.preserve_ordering is not supported (stream replies are sent as each "
            "request finishes)"
        )
    policy = db.default_queue_policy
    if policy.timeout_action == mc.ModelQueuePolicy.DELAY:
        raise ModelConfigError(
            f"{where}: dynamic_batching.default_queue_policy.timeout_action DELAY is not supported"
        )
    timeout_us = policy.default_timeout_microseconds
    queue = QueuePolicySpec(
        max_queue_size=int(policy.max_queue_size),
        default_timeout_s=timeout_us / 1e6 if timeout_us else None,
        allow_timeout_override=policy.allow_timeout_override,
    )
    return DynamicBatchingSpec(tuple(sorted(preferred)), db.max_queue_delay_microseconds / 1e6, queue)


def _instance_groups(config: mc.ModelConfig, where: Path) -> tuple[InstanceGroupSpec, ...]:
    groups = []
    for i, group in enumerate(config.instance_group):
        kind = mc.ModelInstanceGroup.Kind.Name(group.kind)
        if kind == "KIND_MODEL":
            raise ModelConfigError(f"{where}: instance_group[{i}].kind KIND_MODEL is not supported")
        if group.count < 0:
            raise ModelConfigError(f"{where}: instance_group[{i}].count must be >= 0, got {group.count}")
        if kind == "KIND_CPU" and group.gpus:
            raise ModelConfigError(f"{where}: instance_group[{i}]: gpus given with kind KIND_CPU")
        groups.append(InstanceGroupSpec(kind, max(int(group.count), 1), tuple(int(g) for g in group.gpus)))
    return tuple(groups) or (InstanceGroupSpec("KIND_AUTO", 1, ()),)
