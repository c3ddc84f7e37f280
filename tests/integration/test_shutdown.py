"""SIGTERM under load loses nothing: every accepted call completes within --grace-period, exit code 0.

A real server on loopback with two add models (y = x + 1): `busy` batches up to 8 rows and waits up to
20 ms for a fuller batch, `held` waits 2 s (Triton's fixed delay, `batching.strict_delay`), so requests
sit queued when the signal comes.
64 asyncio clients (grpc.aio stubs) send to `busy` in a loop; a few calls wait in `held`'s queue (gRPC and
HTTP). SIGTERM mid-load. Every call either gets its correct reply or is refused with UNAVAILABLE (HTTP
503) — none CANCELLED, none lost — and a call made after the signal, while `held` still drains, is refused.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest

from serving.api.codec import build_infer_request
from serving.proto import inference_pb2_grpc
from tests.model_factory import add_model_config, write_add_repository
from tests.servers import ServerProcess, start_server

pytestmark = pytest.mark.integration

CONCURRENCY = 64
GRACE_S = 10.0
HELD_DELAY_S = 2.0


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    busy = "dynamic_batching { max_queue_delay_microseconds: 20000 }"
    held = f"dynamic_batching {{ max_queue_delay_microseconds: {int(HELD_DELAY_S * 1e6)} }}"
    write_add_repository(tmp_path / "repo", "busy", config=add_model_config("busy", batching=busy))
    strict = 'parameters { key: "batching.strict_delay" value: { string_value: "true" } }'
    held_config = add_model_config("held", batching=held, extra=strict)
    write_add_repository(tmp_path / "repo", "held", config=held_config)
    process = start_server(tmp_path / "repo", tmp_path / "server.log", "--grace-period", str(GRACE_S))
    yield process
    process.stop()


def _check(reply: object, x: np.ndarray) -> bool:
    y = np.frombuffer(reply.raw_output_contents[0], np.float32)  # type: ignore[attr-defined]
    return bool(np.array_equal(y, x.ravel() + 1))


async def _client(
    stub: inference_pb2_grpc.GRPCInferenceServiceStub, worker: int, tally: Counter[str]
) -> None:
    """Send to `busy` until refused (a refused client would go to another replica)."""
    sent = 0
    while True:
        x = np.full((1, 4), worker * 10_000 + sent, np.float32)
        sent += 1
        try:
            reply = await stub.ModelInfer(build_infer_request("busy", {"x": x}), timeout=30)
        except grpc.aio.AioRpcError as exc:
            tally[exc.code().name] += 1
            return
        tally["OK" if _check(reply, x) else "WRONG"] += 1


async def _held(stub: inference_pb2_grpc.GRPCInferenceServiceStub, value: float) -> str:
    x = np.full((1, 4), value, np.float32)
    try:
        reply = await stub.ModelInfer(build_infer_request("held", {"x": x}), timeout=30)
    except grpc.aio.AioRpcError as exc:
        return exc.code().name
    return "OK" if _check(reply, x) else "WRONG"


def _http_held(url: str, value: float) -> str:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [value] * 4}]}
    request = urllib.request.Request(f"{url}/v2/models/held/infer", data=json.dumps(body).encode())
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            data = json.loads(response.read())["outputs"][0]["data"]
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except OSError as exc:  # connection refused or reset: the request was not accepted
        return f"refused: {exc}"
    return "OK" if data == [value + 1] * 4 else "WRONG"


async def _scenario(server: ServerProcess, pool: ThreadPoolExecutor) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    async with grpc.aio.insecure_channel(server.grpc_address) as channel:
        stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
        tally: Counter[str] = Counter()
        clients = [asyncio.create_task(_client(stub, w, tally)) for w in range(CONCURRENCY)]
        held = [asyncio.create_task(_held(stub, v)) for v in (1.0, 2.0, 3.0)]
        http_held = [loop.run_in_executor(pool, _http_held, server.http_url, v) for v in (4.0, 5.0)]
        await asyncio.sleep(1.0)  # load running, `held` requests queued for 2 s
        assert tally["OK"] > 0 and not any(t.done() for t in held), (tally, server.log()[-2000:])
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)  # draining: `held` still waits for its batch
        probe = await _held(stub, 9.0)
        http_probe = await loop.run_in_executor(pool, _http_held, server.http_url, 9.0)
        results = await asyncio.gather(*clients, *held, *http_held)
        code = await loop.run_in_executor(pool, server.process.wait, GRACE_S + 10)
        return {
            "tally": tally,
            "held": results[CONCURRENCY : CONCURRENCY + 3],
            "http_held": results[CONCURRENCY + 3 :],
            "probe": probe,
            "http_probe": http_probe,
            "exit": code,
            "seconds": time.monotonic() - signalled,
        }


def test_sigterm_under_load_loses_no_accepted_call(server: ServerProcess) -> None:
    with ThreadPoolExecutor(8) as pool:
        outcome = asyncio.run(_scenario(server, pool))
    log = server.log()[-4000:]
    tally = outcome["tally"]
    assert isinstance(tally, Counter)
    print(
        f"\nSIGTERM at c={CONCURRENCY}: {dict(tally)}; held {outcome['held']} {outcome['http_held']}; "
        f"probe {outcome['probe']} / {outcome['http_probe']}; exit {outcome['exit']} "
        f"after {outcome['seconds']:.2f}s"
    )
    # every call got its correct reply or was refused with UNAVAILABLE: none cancelled, none wrong
    assert set(tally) <= {"OK", "UNAVAILABLE"}, (tally, log)
    assert tally["UNAVAILABLE"] == CONCURRENCY, (tally, log)  # each client ended on a refusal
    # the queued calls were waited for (2 s batch delay), not cancelled
    assert outcome["held"] == ["OK"] * 3 and outcome["http_held"] == ["OK"] * 2, (outcome, log)
    assert outcome["probe"] == "UNAVAILABLE", (outcome, log)
    assert outcome["http_probe"] == "HTTP 503", (outcome, log)
    assert outcome["exit"] == 0, log
    assert HELD_DELAY_S - 1.0 < float(outcome["seconds"]) < GRACE_S, (outcome, log)  # type: ignore[arg-type]
