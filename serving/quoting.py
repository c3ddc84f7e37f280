"""Client-supplied names in error messages: cut to NAME_LIMIT characters, so a huge name cannot make a
huge message (or log line)."""

from __future__ import annotations

NAME_LIMIT = 200


def clip(name: str, limit: int = NAME_LIMIT) -> str:
    return name if len(name) <= limit else name[:limit] + "…"
