"""`--frontends 2` through the real server and tritonclient: several front-end processes really serve
(distinct pids, each with requests), replies are right (numbers and strings through the slots, a tensor
larger than a slot through the socket), a killed front-end is restarted and only its own in-flight
calls fail (UNAVAILABLE), and SIGTERM lets every accepted call finish before all processes exit 0.
"""

from __future__ import annotations

import os
import re
import signal
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.model_factory import (
    STRING_IDENTITY_CONFIG,
    add_model_config,
    write_add_repository,
    write_string_identity_model,
)
from tests.servers import ServerProcess, start_server

pytestmark = pytest.mark.integration

WIDE = 300_000  # FP32 elements: 1.2 MB, more than one 1 MiB slot
HELD_DELAY_S = 1.5
CLIENTS = 16  # one connection each: the kernel spreads them over the front-ends
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]  # else clients of one address share one


def _repository(root: Path) -> Path:
    write_add_repository(root, "add")
    write_add_repository(root, "wide", config=add_model_config("wide", width=WIDE), width=WIDE)
    held = f"dynamic_batching {{ max_queue_delay_microseconds: {int(HELD_DELAY_S * 1e6)} }}"
    strict = 'parameters { key: "batching.strict_delay" value: { string_value: "true" } }'  # calls sit queued
    held_config = add_model_config("held", max_batch_size=64, batching=held, extra=strict)
    write_add_repository(root, "held", config=held_config)
    write_string_identity_model(root / "strings" / "1" / "model.onnx")
    (root / "strings" / "config.pbtxt").write_text(STRING_IDENTITY_CONFIG)
    return root


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    repo = _repository(tmp_path / "repo")
    process = start_server(repo, tmp_path / "server.log", "--frontends", "2", "--grace-period", "10")
    yield process
    process.stop()


def _metrics(server: ServerProcess) -> str:
    with urllib.request.urlopen(server.metrics_url, timeout=10) as reply:
        return str(reply.read().decode())


def _frontend_requests(server: ServerProcess) -> dict[int, float]:
    """pid → ModelInfer requests it sent through its slots."""
    pattern = r'serving_frontend_requests_total\{frontend="\d+",pid="(\d+)"\} (\S+)'
    return {int(pid): float(n) for pid, n in re.findall(pattern, _metrics(server))}


def _add(address: str, model: str, width: int = 4, seed: int = 0) -> None:
    x = np.random.default_rng(seed).random((1, width), dtype=np.float32)
    with grpcclient.InferenceServerClient(address, channel_args=OWN_CONNECTION) as client:
        tensor = grpcclient.InferInput("x", [1, width], "FP32")
        tensor.set_data_from_numpy(x)
        result = client.infer(model, [tensor])
        y = result.as_numpy("y")
    assert y is not None and np.array_equal(y, x + 1), f"{model}: wrong reply"


def _wait(condition: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_several_frontends_serve_correct_replies(server: ServerProcess) -> None:
    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(lambda i: _add(server.grpc_address, "add", seed=i), range(CLIENTS)))
    served = {pid: n for pid, n in _frontend_requests(server).items() if n > 0}
    assert len(served) == 2, f"requests per front-end pid: {served}"
    assert server.process.pid not in served and sum(served.values()) == CLIENTS
    assert "serving_frontends 2.0" in _metrics(server)
    with grpcclient.InferenceServerClient(server.grpc_address) as client:  # forwarded to the worker
        stats = client.get_inference_statistics("add").model_stats[0]
        assert stats.inference_stats.success.count == CLIENTS
        assert client.is_server_ready() and client.get_model_metadata("add").name == "add"
    assert 'serving_requests_total{code="OK",model="add",version="1"} 16.0' in _metrics(server)


def test_strings_and_large_tensors(server: ServerProcess) -> None:
    words = np.array([[b"caf\xc3\xa9"], [b""], [b"\x00 nul \xe2\x82\xac"]], dtype=np.object_)
    with grpcclient.InferenceServerClient(server.grpc_address) as client:
        tensor = grpcclient.InferInput("x", [3, 1], "BYTES")
        tensor.set_data_from_numpy(words)
        y = client.infer("strings", [tensor]).as_numpy("y")
        assert y is not None and y.tolist() == words.tolist()
    before = sum(_frontend_requests(server).values())
    _add(server.grpc_address, "wide", width=WIDE)  # larger than a slot: copied through the socket
    assert sum(_frontend_requests(server).values()) == before, "a tensor larger than a slot used a slot"
    assert 'serving_requests_total{code="OK",model="wide",version="1"} 1.0' in _metrics(server)
    with grpcclient.InferenceServerClient(server.grpc_address) as client:
        tensor = grpcclient.InferInput("x", [1, 5], "FP32")
        tensor.set_data_from_numpy(np.zeros((1, 5), np.float32))
        with pytest.raises(InferenceServerException, match="does not match the model's") as refused:
            client.infer("add", [tensor])
        assert refused.value.status() == "StatusCode.INVALID_ARGUMENT"


def _held_calls(address: str, count: int) -> list[str]:
    """`count` concurrent calls to `held`, one connection each: 'OK', or the error's status code."""

    def call(i: int) -> str:
        try:
            _add(address, "held", seed=i)
        except InferenceServerException as exc:
            return str(exc.status())
        return "OK"

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(call, range(count)))


def test_killed_frontend_is_restarted_and_loses_only_its_calls(server: ServerProcess) -> None:
    before = _frontend_requests(server)
    with ThreadPoolExecutor(1) as pool:
        calls = pool.submit(_held_calls, server.grpc_address, CLIENTS)
        _wait(lambda: sum(_frontend_requests(server).values()) == CLIENTS)  # all queued in `held`
        in_flight = {pid: n - before.get(pid, 0) for pid, n in _frontend_requests(server).items()}
        victim = max(in_flight, key=lambda pid: in_flight[pid])
        os.kill(victim, signal.SIGKILL)
        outcome = calls.result(timeout=30)
    assert outcome.count("StatusCode.UNAVAILABLE") == in_flight[victim], (outcome, in_flight)
    assert outcome.count("OK") == CLIENTS - in_flight[victim], outcome
    _wait(lambda: "serving_frontend_restarts_total 1.0" in _metrics(server))
    _wait(lambda: len(_frontend_requests(server)) == 2 and victim not in _frontend_requests(server))
    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(lambda i: _add(server.grpc_address, "add", seed=i), range(CLIENTS)))
    assert all(n > 0 for n in _frontend_requests(server).values()), "the restarted front-end serves"


def test_sigterm_drains_every_accepted_call(server: ServerProcess) -> None:
    pids = list(_frontend_requests(server))
    with ThreadPoolExecutor(1) as pool:
        calls = pool.submit(_held_calls, server.grpc_address, 8)
        _wait(lambda: sum(_frontend_requests(server).values()) == 8)
        server.process.send_signal(signal.SIGTERM)
        assert calls.result(timeout=30) == ["OK"] * 8
    assert server.process.wait(30) == 0, server.log()[-3000:]
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    drained = re.findall(r"front-end pid (\d+) drained (\d+) accepted calls", server.log())
    assert sorted(int(pid) for pid, _ in drained) == sorted(pids), drained
    assert sum(int(n) for _, n in drained) == 8, drained


def test_one_frontend_keeps_the_single_process_server(tmp_path: Path) -> None:
    repo = _repository(tmp_path / "repo")
    process = start_server(repo, tmp_path / "server.log", "--frontends", "1", "--load-model", "add")
    try:
        _add(process.grpc_address, "add")
        assert "serving_frontend" not in _metrics(process) and "front-end" not in process.log()
    finally:
        assert process.stop() == 0
