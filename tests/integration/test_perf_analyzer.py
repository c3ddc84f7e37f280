"""Triton's own perf_analyzer runs against us unmodified, and its view of the server agrees with ours."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient

from tests.servers import ServerProcess

pytestmark = pytest.mark.integration

PERF_ANALYZER = Path(sys.executable).parent / "perf_analyzer"


def run_perf_analyzer(address: str, model: str, env: dict[str, str], *extra: str) -> str:
    binary = str(PERF_ANALYZER) if PERF_ANALYZER.exists() else shutil.which("perf_analyzer")
    assert binary, "perf_analyzer not found (it ships in tritonclient==2.41.0)"
    args = [
        binary,
        "-m",
        model,
        "-i",
        "grpc",
        "-u",
        address,
        "--measurement-mode",
        "count_windows",
        "--measurement-request-count",
        "24",
        # -s 50: the default 10 % band is never met on a shared 2-core machine; up to 10 windows to get
        # three consecutive stable ones (4 was not always enough there).
        "-s",
        "50",
        "--max-trials",
        "10",
        *extra,
    ]
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, (
        f"perf_analyzer failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    )
    return result.stdout


@pytest.mark.parametrize("model", ["digits", "resnet50"])
def test_perf_analyzer_concurrency_sweep(
    live_server: ServerProcess, perf_analyzer_env: dict[str, str], model: str
) -> None:
    client = grpcclient.InferenceServerClient(live_server.grpc_address)

    def executed() -> int:
        stats = client.get_inference_statistics(model, as_json=True)["model_stats"]
        return sum(int(s.get("inference_count", 0)) for s in stats)

    before = executed()
    concurrency = "1:8:7"  # the ends of the 1..8 range: every level would triple the run time
    output = run_perf_analyzer(
        live_server.grpc_address, model, perf_analyzer_env, "--concurrency-range", concurrency
    )
    lines = re.findall(r"^Concurrency: (\d+), throughput: ([\d.]+) infer/sec", output, re.M)
    assert [int(c) for c, _ in lines] == [1, 8], output
    assert all(float(t) > 0 for _, t in lines)
    # perf_analyzer prints a Server block from our ModelStatistics; it must report the requests it sent.
    server_counts = [int(n) for n in re.findall(r"Server:\s*\n\s*Inference count: (\d+)", output)]
    assert server_counts and all(n > 0 for n in server_counts), output
    assert executed() - before >= sum(server_counts)


def run_perf_analyzer_http(address: str, model: str, env: dict[str, str], *extra: str) -> str:
    """perf_analyzer over KServe v2 REST: time windows of 2 s (`-p 2000`), the same 50 % stability band."""
    binary = str(PERF_ANALYZER) if PERF_ANALYZER.exists() else shutil.which("perf_analyzer")
    assert binary, "perf_analyzer not found (it ships in tritonclient==2.41.0)"
    args = [binary, "-m", model, "-i", "http", "-u", address, "-p", "2000", "-s", "50", "--max-trials", "10"]
    result = subprocess.run([*args, *extra], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, f"perf_analyzer failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_perf_analyzer_over_http(live_server: ServerProcess, perf_analyzer_env: dict[str, str]) -> None:
    """perf_analyzer reads metadata, config and statistics over HTTP and infers with binary tensors."""
    assert live_server.http_address is not None
    client = grpcclient.InferenceServerClient(live_server.grpc_address)
    (before,) = client.get_inference_statistics("digits", "2", as_json=True)["model_stats"]
    output = run_perf_analyzer_http(
        live_server.http_address, "digits", perf_analyzer_env, "-x", "2", "--concurrency-range", "2"
    )
    (throughput,) = re.findall(r"^Concurrency: 2, throughput: ([\d.]+) infer/sec", output, re.M)
    assert float(throughput) > 0, output
    server_counts = [int(n) for n in re.findall(r"Server:\s*\n\s*Inference count: (\d+)", output)]
    assert server_counts and all(n > 0 for n in server_counts), output
    (after,) = client.get_inference_statistics("digits", "2", as_json=True)["model_stats"]
    assert int(after["inference_count"]) - int(before.get("inference_count", 0)) >= sum(server_counts)
