"""Triton's shared-memory extension over HTTP: register, unregister and list regions.

    GET  /v2/systemsharedmemory[/region/{name}]/status
    POST /v2/systemsharedmemory/region/{name}/register    {"key": "/k", "offset": 0, "byte_size": N}
    POST /v2/systemsharedmemory[/region/{name}]/unregister
    the same under /v2/cudasharedmemory ({"raw_handle": {"b64": ...}, "device_id": 0, "byte_size": N}),
    which a server without a GPU refuses (FAILED_PRECONDITION → 400)

The regions are the facade's (serving/core/service.py): the same ones gRPC registers and uses.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from aiohttp import web

from serving.api.http.bodies import json_response, optional_json_object
from serving.errors import InvalidInput
from serving.shared_memory.regions import SharedMemoryRegions

SYSTEM = "/v2/systemsharedmemory"
CUDA = "/v2/cudasharedmemory"


def add_routes(app: web.Application, regions: SharedMemoryRegions) -> None:
    routes = SharedMemoryRoutes(regions)
    app.router.add_get(f"{SYSTEM}/status", routes.system_status)
    app.router.add_get(f"{SYSTEM}/region/{{name}}/status", routes.system_status)
    app.router.add_post(f"{SYSTEM}/region/{{name}}/register", routes.system_register)
    app.router.add_post(f"{SYSTEM}/unregister", routes.system_unregister)
    app.router.add_post(f"{SYSTEM}/region/{{name}}/unregister", routes.system_unregister)
    app.router.add_get(f"{CUDA}/status", routes.cuda_status)
    app.router.add_get(f"{CUDA}/region/{{name}}/status", routes.cuda_status)
    app.router.add_post(f"{CUDA}/region/{{name}}/register", routes.cuda_register)
    app.router.add_post(f"{CUDA}/unregister", routes.cuda_unregister)
    app.router.add_post(f"{CUDA}/region/{{name}}/unregister", routes.cuda_unregister)


class SharedMemoryRoutes:
    def __init__(self, regions: SharedMemoryRegions) -> None:
        self._regions = regions

    async def system_status(self, request: web.Request) -> web.Response:
        listed = self._regions.system_status(request.match_info.get("name", ""))
        return json_response(
            [{"name": r.name, "key": r.key, "offset": r.offset, "byte_size": r.byte_size} for r in listed]
        )

    async def system_register(self, request: web.Request) -> web.Response:
        body = await optional_json_object(request)
        key = body.get("key")
        if not isinstance(key, str):
            raise InvalidInput("'key' must be a string")
        offset = _count(body, "offset", required=False)
        self._regions.register_system(request.match_info["name"], key, offset, _count(body, "byte_size"))
        return web.Response(status=200)

    async def system_unregister(self, request: web.Request) -> web.Response:
        self._regions.unregister_system(request.match_info.get("name", ""))
        return web.Response(status=200)

    async def cuda_status(self, request: web.Request) -> web.Response:
        listed = self._regions.cuda_status(request.match_info.get("name", ""))
        return json_response(
            [{"name": r.name, "device_id": r.device_id, "byte_size": r.byte_size} for r in listed]
        )

    async def cuda_register(self, request: web.Request) -> web.Response:
        body = await optional_json_object(request)
        handle = body.get("raw_handle")
        encoded = handle.get("b64") if isinstance(handle, dict) else None
        if not isinstance(encoded, str):
            raise InvalidInput("'raw_handle' must be {\"b64\": \"<base64 of the CUDA IPC handle>\"}")
        try:
            raw = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise InvalidInput("'raw_handle.b64' is not valid base64") from None
        device = _count(body, "device_id", required=False)
        self._regions.register_cuda(request.match_info["name"], raw, device, _count(body, "byte_size"))
        return web.Response(status=200)

    async def cuda_unregister(self, request: web.Request) -> web.Response:
        self._regions.unregister_cuda(request.match_info.get("name", ""))
        return web.Response(status=200)


def _count(body: dict[str, Any], key: str, required: bool = True) -> int:
    value = body.get(key)
    if value is None and not required:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(f"'{key}' must be a non-negative integer, got {value!r}")
    return value
