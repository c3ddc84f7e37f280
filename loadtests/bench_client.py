"""The bench's client: closed-loop batch-N requests over gRPC, every sampled reply checked.

One uvloop asyncio client in this process sends pre-serialised ModelInfer requests (``raw_input_contents``)
through one channel, ``concurrency`` calls in flight, for a short window, and keeps each call's latency.
Replies stay bytes; every ``check_every``-th one (and every one of the first 64) is parsed and compared
with the output in-process ONNX Runtime gave for the same rows. A wrong reply is recorded and fails the
bench; an error reply too (a window with errors measures nothing useful).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
import uvloop

from serving.proto import inference_pb2 as pb

METHOD = "/inference.GRPCInferenceService/ModelInfer"
ALWAYS_CHECKED = 64
RTOL, ATOL = 1e-3, 1e-5
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]


@dataclass(frozen=True)
class Probe:
    """What one bench client sends: requests built from `inputs`, and the outputs they must return.

    `expected` None: nothing to compare (the no-model server answers every request the same way)."""

    model: str
    input_name: str
    output_name: str
    inputs: Sequence[np.ndarray]
    expected: Sequence[np.ndarray] | None

    @property
    def rows(self) -> int:
        return int(self.inputs[0].shape[0])

    def requests(self) -> list[bytes]:
        built = []
        for rows in self.inputs:
            request = pb.ModelInferRequest(model_name=self.model)
            tensor = request.inputs.add(name=self.input_name, datatype="FP32")
            tensor.shape.extend(rows.shape)
            request.raw_input_contents.append(np.ascontiguousarray(rows, np.float32).tobytes())
            built.append(request.SerializeToString())
        return built


@dataclass
class Window:
    """One measurement: `concurrency` clients for `elapsed_s` seconds."""

    concurrency: int
    rows_per_request: int
    elapsed_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""
    calls: int = 0  # every call sent in the window, the unmeasured ones (checks, warm-up) included
    checked: int = 0
    wrong: list[str] = field(default_factory=list)

    @property
    def requests_per_s(self) -> float:
        return len(self.latencies_s) / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def rows_per_s(self) -> float:
        return self.requests_per_s * self.rows_per_request

    @property
    def p50_s(self) -> float:
        return float(np.median(self.latencies_s)) if self.latencies_s else float("nan")


def reply_output(reply: bytes, name: str) -> np.ndarray:
    """The FP32 output `name` of a serialised ModelInferResponse (raw or typed contents)."""
    response = pb.ModelInferResponse.FromString(reply)
    for index, output in enumerate(response.outputs):
        if output.name != name:
            continue
        if len(response.raw_output_contents) > index:
            data = np.frombuffer(response.raw_output_contents[index], dtype="<f4")
        else:
            data = np.asarray(output.contents.fp32_contents, dtype=np.float32)
        return data.reshape(tuple(output.shape))
    raise ValueError(f"reply has no output {name!r} (outputs {[o.name for o in response.outputs]})")


def check_reply(probe: Probe, index: int, reply: bytes) -> str | None:
    """None when the reply matches what ONNX Runtime gave for request `index`; else what is wrong."""
    if probe.expected is None:
        return None
    expected = probe.expected[index]
    try:
        actual = reply_output(reply, probe.output_name)
    except ValueError as err:
        return f"{probe.model}: {err}"
    if actual.shape != expected.shape:
        return f"{probe.model}: output shape {list(actual.shape)}, expected {list(expected.shape)}"
    if not np.allclose(actual, expected, rtol=RTOL, atol=ATOL):
        worst = float(np.abs(actual - expected).max())
        return f"{probe.model}: request {index} differs from ONNX Runtime by up to {worst:.3g}"
    return None


async def _check_each(call: Any, probe: Probe, requests: Sequence[bytes], window: Window) -> bool:
    """Warm-up: every distinct request once, each reply checked; False when the server fails one."""
    for index, request in enumerate(requests):
        window.calls += 1
        try:
            reply = await call(request, timeout=30)
        except grpc.aio.AioRpcError as err:  # the model is missing or broken: measure nothing
            window.errors += 1
            window.first_error = f"{err.code().name}: {err.details()}"
            return False
        problem = check_reply(probe, index, reply)
        window.checked += 1
        if problem:
            window.wrong.append(problem)
    return True


async def _measure(
    url: str, probe: Probe, concurrency: int, duration_s: float, warmup_s: float, check_every: int
) -> Window:
    window = Window(concurrency, probe.rows)
    requests = probe.requests()
    async with grpc.aio.insecure_channel(url, options=CHANNEL_OPTIONS) as channel:
        call = channel.unary_unary(METHOD)  # bytes in, bytes out: the client parses only what it checks
        if not await _check_each(call, probe, requests, window):
            return window
        sent = 0
        start_at = time.perf_counter() + warmup_s
        end = start_at + duration_s

        async def client(offset: int) -> None:
            nonlocal sent
            index = offset % len(requests)
            while (now := time.perf_counter()) < end:
                sent += 1
                window.calls += 1
                index = (index + 1) % len(requests)
                try:
                    reply = await call(requests[index], timeout=30)
                except grpc.aio.AioRpcError as err:
                    window.errors += 1
                    window.first_error = window.first_error or f"{err.code().name}: {err.details()}"
                    continue
                if now >= start_at:  # calls started in the warm-up are not counted
                    window.latencies_s.append(time.perf_counter() - now)
                if sent <= ALWAYS_CHECKED or sent % check_every == 0:
                    window.checked += 1
                    problem = check_reply(probe, index, reply)
                    if problem:
                        window.wrong.append(problem)

        clients = [asyncio.create_task(client(i)) for i in range(concurrency)]
        await asyncio.sleep(max(0.0, start_at - time.perf_counter()))
        measured_from = time.perf_counter()
        await asyncio.gather(*clients)
        window.elapsed_s = time.perf_counter() - measured_from
    return window


def measure(
    url: str, probe: Probe, concurrency: int, duration_s: float, warmup_s: float = 0.3, check_every: int = 16
) -> Window:
    """One window against `url`, in a fresh uvloop event loop."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_measure(url, probe, concurrency, duration_s, warmup_s, check_every))
