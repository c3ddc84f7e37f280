"""`HttpFrontEnd`: the KServe v2 REST API (plus Triton's extensions) on aiohttp, in gRPC's event loop.

Each route converts the request (serving/api/http/json_codec.py), calls the core facade
(serving/core/service.py) and converts the reply; the model descriptions are the gRPC messages of
serving/api/model_codec.py rendered as JSON. Errors are `{"error": "..."}` with the HTTP status of
serving/api/status.py. Ready endpoints answer 200 (ready) or 400 (not), as Triton's do.

    GET  /v2/health/live | /v2/health/ready | /v2
    GET  /v2/models/{m}[/versions/{v}]            metadata
    GET  /v2/models/{m}[/versions/{v}]/ready | /config | /stats      GET /v2/models/stats
    POST /v2/models/{m}[/versions/{v}]/infer      JSON, or binary tensor data
    POST /v2/repository/index | /v2/repository/models/{m}/load | /unload
    /v2/systemsharedmemory/... and /v2/cudasharedmemory/...   (serving/api/http/shared_memory.py)
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable

import grpc
from aiohttp import web

from serving.api import load_override, model_codec
from serving.api.admission import AdmissionGate
from serving.api.auth import AdminGuard
from serving.api.codec import ROUTING_KEY_METADATA
from serving.api.http import shared_memory
from serving.api.http.bodies import json_response, optional_json_object
from serving.api.http.json_codec import HEADER_LENGTH, decode_infer, encode_infer, message_json
from serving.api.request_log import REQUEST_ID_METADATA, RequestFacts, RequestRecorder
from serving.api.status import http_status_of, message_of, status_of
from serving.core.service import InferenceService
from serving.errors import InvalidInput, ServingError

log = logging.getLogger("serving.api.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MODEL = "/v2/models/{model}"
VERSIONED = "/v2/models/{model}/versions/{version}"


def _error(status: int, message: str) -> web.Response:
    return json_response({"error": message}, status)


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ServingError as exc:
        return _error(http_status_of(exc), message_of(exc))
    except web.HTTPException as exc:  # no such route, wrong method, body too large
        return _error(exc.status, exc.text or exc.reason)
    except Exception as exc:
        log.exception("unexpected error in %s %s", request.method, request.path)
        return _error(500, message_of(exc))


def _ready(ready: bool) -> web.Response:
    return web.Response(status=200 if ready else 400)


class HttpFrontEnd:
    def __init__(
        self,
        service: InferenceService,
        *,
        max_body_bytes: int,
        shutdown_timeout_s: float,
        requests: RequestRecorder | None = None,
        admin_guard: AdminGuard | None = None,
        gate: AdmissionGate | None = None,
    ) -> None:
        self._service = service
        self._admin = admin_guard or AdminGuard(None)  # repository load/unload (serving/api/auth.py)
        self._gate = gate or AdmissionGate()  # accepted calls: refused while draining, awaited by stop
        self._shutdown_timeout_s = shutdown_timeout_s
        self._requests = requests  # serving_requests_total, latency and the access log, as for gRPC
        self._app = web.Application(middlewares=[errors_as_json], client_max_size=max_body_bytes)
        self._add_routes()
        self._runner = web.AppRunner(self._app, access_log=None, shutdown_timeout=shutdown_timeout_s)

    def _add_routes(self) -> None:
        get, post = self._app.router.add_get, self._app.router.add_post
        get("/v2/health/live", self.live)
        get("/v2/health/ready", self.ready)
        get("/v2", self.server_metadata)
        get("/v2/models/stats", self.statistics)
        for prefix in (MODEL, VERSIONED):
            get(prefix, self.model_metadata)
            get(f"{prefix}/ready", self.model_ready)
            get(f"{prefix}/config", self.model_config)
            get(f"{prefix}/stats", self.statistics)
            post(f"{prefix}/infer", self.infer)
        post("/v2/repository/index", self.repository_index)
        post("/v2/repository/models/{model}/load", self.load)
        post("/v2/repository/models/{model}/unload", self.unload)
        shared_memory.add_routes(self._app, self._service.shared_memory)

    async def start(self, host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> int:
        """Listen on host:port (0 = any free port), over TLS with `ssl_context`; return the bound port."""
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port, ssl_context=ssl_context).start()
        return int(self._runner.addresses[0][1])

    async def stop(self, timeout_s: float | None = None) -> None:
        """Refuse new requests (503), let the accepted ones finish (up to `timeout_s`, by default the
        shutdown timeout), then stop listening and close the connections."""
        self._gate.begin_drain()
        await self._gate.drained(self._shutdown_timeout_s if timeout_s is None else timeout_s)
        await self._runner.cleanup()

    # ---- health and metadata --------------------------------------------------------------------

    async def live(self, request: web.Request) -> web.Response:
        return _ready(self._service.live())

    async def ready(self, request: web.Request) -> web.Response:
        return _ready(self._service.ready())

    async def model_ready(self, request: web.Request) -> web.Response:
        return _ready(self._service.model_ready(*_model(request)))

    async def server_metadata(self, request: web.Request) -> web.Response:
        return json_response(message_json(model_codec.server_metadata(self._service.server_info())))

    async def model_metadata(self, request: web.Request) -> web.Response:
        info = self._service.model_info(*_model(request))
        return json_response(message_json(model_codec.model_metadata(info)))

    async def model_config(self, request: web.Request) -> web.Response:
        version = self._service.model_version(*_model(request))
        return json_response(message_json(model_codec.effective_config(version)))

    # ---- inference ------------------------------------------------------------------------------

    async def infer(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        model, version = _model(request)
        facts, code = RequestFacts(model, version, "", None), grpc.StatusCode.OK
        gate = self._gate
        try:
            gate.enter(inference=True)  # refused (503) while draining or beyond max_concurrent_rpcs
            try:
                decoded, encoding = decode_infer(
                    await request.read(),
                    request.headers.get(HEADER_LENGTH),
                    model,
                    version,
                    request.headers.get(ROUTING_KEY_METADATA, ""),
                    self._service.shared_memory,
                )
                facts = RequestFacts(model, version, decoded.id, None)
                response = await self._service.infer(decoded)
                served = (response.model_name, response.model_version)
                facts = RequestFacts(model, version, decoded.id, served)
                body, header_length = encode_infer(response, encoding)
            finally:
                gate.leave(inference=True)
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception as exc:
            code = status_of(exc)
            raise
        finally:
            if self._requests is not None:
                request_id = request.headers.get(REQUEST_ID_METADATA, "")
                self._requests.record(facts, code, time.perf_counter() - started, lambda: request_id)
        if header_length is None:
            return web.Response(body=body, content_type="application/json")
        headers = {HEADER_LENGTH: str(header_length)}
        return web.Response(body=body, headers=headers, content_type="application/octet-stream")

    # ---- statistics and repository --------------------------------------------------------------

    async def statistics(self, request: web.Request) -> web.Response:
        name = request.match_info.get("model", "")
        versions = self._service.statistics(name, request.match_info.get("version", ""))
        return json_response(message_json(model_codec.model_statistics(versions)))

    async def repository_index(self, request: web.Request) -> web.Response:
        ready = (await optional_json_object(request)).get("ready", False)
        if not isinstance(ready, bool):
            raise InvalidInput("'ready' must be a boolean")
        index = model_codec.repository_index(self._service.repository_index(ready))
        return json_response([message_json(entry) for entry in index.models])

    async def load(self, request: web.Request) -> web.Response:
        """Triton's `config` and `file:<path>` (base64) parameters override the model for this load."""
        self._check_admin(request)
        with self._gate.admitted(inference=False):
            override = load_override.from_json(await optional_json_object(request))
            await self._service.load(request.match_info["model"], override)
        return web.Response(status=200)

    def _check_admin(self, request: web.Request) -> None:
        """Load and unload change what is served: guarded as on gRPC (token, or loopback only)."""
        self._admin.check_http(request.path, request.remote, request.headers.items())

    async def unload(self, request: web.Request) -> web.Response:
        self._check_admin(request)
        with self._gate.admitted(inference=False):
            await optional_json_object(request)
            await self._service.unload(request.match_info["model"])
        return web.Response(status=200)


def _model(request: web.Request) -> tuple[str, str]:
    return request.match_info["model"], request.match_info.get("version", "")
