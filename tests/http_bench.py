"""How the HTTP library was chosen (docs/http.md): a small KServe v2 JSON infer round-trip on aiohttp and on
Starlette + uvicorn (httptools), each in its own process on uvloop, driven by one keep-alive http.client
connection on loopback. Not a test; run it as

    PYTHONPATH=/tmp/h3bench python -m tests.http_bench --requests 3000 --rounds 3

(`pip install --target /tmp/h3bench starlette==1.10.0 uvicorn==0.54.0 httptools==0.9.0`; aiohttp is in the
venv). Both servers do the same work per request: parse the JSON body, build a numpy array, answer JSON.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import socket
import statistics
import time
from typing import Any

import numpy as np

BODY = json.dumps(
    {"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": [0.5] * 64}]}
).encode()


def _answer(body: bytes) -> bytes:
    request = json.loads(body)
    tensor = request["inputs"][0]
    array = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
    output = {
        "name": "y",
        "shape": list(array.shape),
        "datatype": "FP32",
        "data": (array * 2).ravel().tolist(),
    }
    return json.dumps({"model_name": "m", "outputs": [output]}).encode()


def _serve_aiohttp(port: int) -> None:
    import uvloop
    from aiohttp import web

    async def infer(request: web.Request) -> web.Response:
        return web.Response(body=_answer(await request.read()), content_type="application/json")

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/v2/models/m/infer", infer)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await asyncio_forever()

    uvloop.run(main())


async def asyncio_forever() -> None:
    import asyncio

    await asyncio.Event().wait()


def _serve_starlette(port: int) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def infer(request: Request) -> Response:
        return Response(_answer(await request.body()), media_type="application/json")

    app = Starlette(routes=[Route("/v2/models/m/infer", infer, methods=["POST"])])
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )


SERVERS: dict[str, Any] = {"aiohttp": _serve_aiohttp, "starlette+uvicorn": _serve_starlette}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _measure(port: int, requests: int) -> list[float]:
    deadline = time.monotonic() + 30
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port)
            conn.connect()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    headers = {"Content-Type": "application/json"}
    latencies = []
    for i in range(requests + 200):  # 200 warm-up requests
        started = time.perf_counter()
        conn.request("POST", "/v2/models/m/infer", BODY, headers)
        reply = conn.getresponse()
        data = reply.read()
        if i >= 200:
            latencies.append(time.perf_counter() - started)
        assert reply.status == 200 and b'"outputs"' in data, data
    conn.close()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[float]] = {name: [] for name in SERVERS}
    for _ in range(args.rounds):
        for name, serve in SERVERS.items():
            port = _free_port()
            process = multiprocessing.Process(target=serve, args=(port,), daemon=True)
            process.start()
            try:
                results[name] += _measure(port, args.requests)
            finally:
                process.terminate()
                process.join()
    for name, latencies in results.items():
        ms = sorted(x * 1e3 for x in latencies)
        print(
            f"{name:18s} {len(ms)} requests: {1e3 / statistics.fmean(ms):7.0f} req/s  "
            f"p50 {ms[len(ms) // 2]:.3f} ms  p99 {ms[int(len(ms) * 0.99)]:.3f} ms"
        )


if __name__ == "__main__":
    main()
