"""Decoding cannot stall the server: a 20 MB request naming 10⁶ input tensors, sent while another client
runs closed-loop requests, is refused at once (INVALID_ARGUMENT, unparsed) and that client's p99 stays
within 2 × its unloaded p99 (issue 9: it stalled every client for 9.4 s).

Run with `-s` to see the latencies (docs/reliability.md, "Bad input")."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import grpc
import numpy as np
import pytest

from serving.proto import inference_pb2 as pb
from serving.proto import inference_pb2_grpc
from tests.integration.bad_input import good_request, raw_caller, write_repository
from tests.servers import ServerProcess, start_server

pytestmark = pytest.mark.integration

WINDOW_S = 3.0
BIG_SENDS = 4
ATTEMPTS = 3


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repo = write_repository(tmp_path_factory.mktemp("repo"))
    process = start_server(repo, tmp_path_factory.mktemp("stall") / "server.log", "--torch-threads", "1")
    yield process
    assert process.stop() == 0, process.log()[-3000:]


def million_inputs() -> bytes:
    request = pb.ModelInferRequest(model_name="add", model_version="1")
    tensor = pb.ModelInferRequest.InferInputTensor
    request.inputs.extend(tensor(name=f"x{i}", datatype="FP32", shape=[1, 4]) for i in range(1_000_000))
    return request.SerializeToString()


def closed_loop(stub: inference_pb2_grpc.GRPCInferenceServiceStub, seconds: float) -> list[float]:
    request, latencies = good_request(), []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        started = time.perf_counter()
        stub.ModelInfer(request, timeout=30)
        latencies.append(time.perf_counter() - started)
    return latencies


def p99(latencies: list[float]) -> float:
    return float(np.percentile(latencies, 99))


def one_big_tensor(size: int) -> bytes:
    """A request as large as the 10⁶-input one, but of one tensor: what moving its bytes costs."""
    request = good_request()
    request.raw_input_contents[0] = bytes(size)
    return request.SerializeToString()


def while_sending(
    stub: inference_pb2_grpc.GRPCInferenceServiceStub, channel: grpc.Channel, data: bytes
) -> tuple[list[float], list[float]]:
    """The closed-loop client's latencies while `data` is sent BIG_SENDS times; the sends' durations."""
    loaded: list[float] = []
    loop = threading.Thread(target=lambda: loaded.extend(closed_loop(stub, WINDOW_S)))
    loop.start()
    send, sends = raw_caller(channel), []
    time.sleep(0.3)
    for _ in range(BIG_SENDS):
        started = time.perf_counter()
        with pytest.raises(grpc.RpcError) as info:
            send(data, timeout=60)
        sends.append(time.perf_counter() - started)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value
        time.sleep(0.2)
    loop.join()
    return loaded, sends


def test_a_million_inputs_do_not_stall_other_clients(server: ServerProcess) -> None:
    """The bound: the other client's p99 within 2 × the larger of its unloaded p99 and its p99 while a
    request of the same size but one tensor is sent (on this shared 2-core machine, moving 20 MB over
    loopback alone can double a 2 ms p99; what is tested is that the million tensors add nothing to it);
    no call of it waits a second (the stall was 9.4 s). The machine is shared: up to ATTEMPTS rounds,
    one of which must meet the p99 bound; every round must meet the others."""
    big = million_inputs()
    assert len(big) > 20_000_000
    blob = one_big_tensor(len(big))
    options = [("grpc.max_send_message_length", 64 << 20)]
    with (
        grpc.insecure_channel(server.grpc_address) as channel,
        grpc.insecure_channel(server.grpc_address, options=options) as big_channel,
    ):
        stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
        closed_loop(stub, 0.5)  # warm up
        for attempt in range(1, ATTEMPTS + 1):
            unloaded = closed_loop(stub, WINDOW_S)
            with_blob, _ = while_sending(stub, big_channel, blob)
            with_million, refusals = while_sending(stub, big_channel, big)
            print(
                f"\nround {attempt}: 10^6-input request ({len(big) / 1e6:.1f} MB) x{BIG_SENDS} refused in "
                f"{max(refusals) * 1e3:.0f} ms at most. Other client p99: unloaded "
                f"{p99(unloaded) * 1e3:.2f} ms (n={len(unloaded)}), while one {len(blob) / 1e6:.1f} MB "
                f"tensor is sent {p99(with_blob) * 1e3:.2f} ms (n={len(with_blob)}), while the 10^6 "
                f"inputs are sent {p99(with_million) * 1e3:.2f} ms (n={len(with_million)}, "
                f"max {max(with_million) * 1e3:.1f} ms)"
            )
            assert max(refusals) < 2.0
            assert max(with_million) < 1.0
            if p99(with_million) <= 2 * max(p99(unloaded), p99(with_blob)):
                break
        else:
            pytest.fail(f"the other client's p99 more than doubled in each of {ATTEMPTS} rounds")
    assert server.process.poll() is None
