"""JSON in and out of the REST routes: one reading of a request's JSON object, one JSON response."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from serving.errors import InvalidInput


def json_object(data: bytes) -> dict[str, Any]:
    """A body that must be one JSON object; InvalidInput when it is not valid JSON or not an object."""
    try:
        document = json.loads(data)
    except ValueError as exc:  # UnicodeDecodeError included
        raise InvalidInput(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidInput("the request body must be a JSON object")
    return document


async def optional_json_object(request: web.Request) -> dict[str, Any]:
    """An optional JSON object body (repository and shared-memory calls); {} when empty."""
    data = await request.read()
    return json_object(data) if data.strip() else {}


def json_response(document: Any, status: int = 200) -> web.Response:
    return web.Response(body=json.dumps(document).encode(), status=status, content_type="application/json")
