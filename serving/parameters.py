"""config.pbtxt `parameters` (every value a string, as in Triton's configs) read as typed values."""

from __future__ import annotations

from collections.abc import Mapping

from serving.errors import ModelConfigError


def flag(parameters: Mapping[str, str], key: str, owner: str) -> bool:
    """Parameter `key` as a boolean: "true" or "false", in any case, spaces around ignored; false when
    absent. Anything else is a ModelConfigError naming `owner` (the model, or its file) and the key."""
    value = parameters.get(key, "false").strip().lower()
    if value not in ("true", "false"):
        raise ModelConfigError(f"{owner}: parameter '{key}' must be \"true\" or \"false\", got {value!r}")
    return value == "true"
