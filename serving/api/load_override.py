"""RepositoryModelLoad's parameters (gRPC ModelRepositoryParameter, or the HTTP body's `parameters`)
as a LoadOverride (serving/lifecycle/override.py): `config` is a string, each `file:<path>` holds bytes
(base64 text over HTTP, as Triton's HTTP extension sends it). Other parameters are ignored, as Triton does.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from serving.errors import InvalidInput
from serving.lifecycle.override import CONFIG_PARAMETER, FILE_PREFIX, LoadOverride
from serving.proto import inference_pb2 as pb
from serving.quoting import clip


def from_grpc(parameters: Mapping[str, pb.ModelRepositoryParameter]) -> LoadOverride:
    config: str | None = None
    files: dict[str, bytes] = {}
    for key, value in parameters.items():
        kind = value.WhichOneof("parameter_choice")
        if key == CONFIG_PARAMETER:
            if kind != "string_param":
                raise InvalidInput(f"load parameter 'config' must be a string_param, got {kind}")
            config = value.string_param
        elif key.startswith(FILE_PREFIX):
            if kind != "bytes_param":
                raise InvalidInput(f"load parameter '{clip(key)}' must be a bytes_param, got {kind}")
            files[key] = value.bytes_param
    return LoadOverride(config, files)


def from_json(body: Mapping[str, Any]) -> LoadOverride:
    parameters = body.get("parameters", {})
    if not isinstance(parameters, dict):
        raise InvalidInput("'parameters' must be a JSON object")
    config: str | None = None
    files: dict[str, bytes] = {}
    for key, value in parameters.items():
        if key == CONFIG_PARAMETER:
            if not isinstance(value, str):
                raise InvalidInput("load parameter 'config' must be a string (the model config as JSON)")
            config = value
        elif key.startswith(FILE_PREFIX):
            if not isinstance(value, str):
                raise InvalidInput(f"load parameter '{clip(key)}' must be a base64 string")
            try:
                files[key] = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise InvalidInput(f"load parameter '{clip(key)}' is not valid base64") from None
    return LoadOverride(config, files)
