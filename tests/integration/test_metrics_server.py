"""/metrics through the real server, scraped by a real Prometheus and read back with PromQL.

The server serves a tiny `add` model; the test sends a known mix of traffic (unary and streamed
successes, INVALID_ARGUMENT, NOT_FOUND for unknown models and versions) and checks that every series
moved exactly as much as the traffic says, that unknown model names stay under `_unknown`, that
ModelStatistics (what perf_analyzer's Server block reads) equals /metrics, and that the JSON access log
holds one structured line per request (sample rate 1).
"""

from __future__ import annotations

import json
import queue
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.integration.test_perf_analyzer import run_perf_analyzer
from tests.model_factory import write_add_repository
from tests.prometheus import Prometheus, run_prometheus
from tests.servers import ServerProcess, start_server

pytestmark = pytest.mark.integration

UNARY_ROWS = [1, 2, 3] * 8  # 24 requests, 48 rows
STREAM_ROWS = [2] * 6  # 6 requests, 12 rows
INVALID = 5  # wrong shape: INVALID_ARGUMENT
UNKNOWN_MODELS = 7  # each a new name: NOT_FOUND
UNKNOWN_VERSIONS = 2  # model "add", version "9": NOT_FOUND
OK = len(UNARY_ROWS) + len(STREAM_ROWS)
ROWS = sum(UNARY_ROWS) + sum(STREAM_ROWS)
TOTAL = OK + INVALID + UNKNOWN_MODELS + 1 + UNKNOWN_VERSIONS  # + 1 unknown model on the stream


@pytest.fixture(scope="module")
def add_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("metrics_server")
    repository = write_add_repository(root / "repository")
    server = start_server(
        repository, root / "server.log", "--log-format", "json", "--access-log-sample-rate", "1"
    )
    yield server
    assert server.stop() == 0, server.log()[-4000:]


@pytest.fixture(scope="module")
def prometheus(add_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    assert add_server.metrics_address is not None
    with run_prometheus(add_server.metrics_address, tmp_path_factory.mktemp("prometheus")) as prom:
        yield prom


def rows_input(rows: int, width: int = 4) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput("x", [rows, width], "FP32")
    tensor.set_data_from_numpy(np.arange(rows * width, dtype=np.float32).reshape(rows, width))
    return tensor


def expect_code(client: grpcclient.InferenceServerClient, code: str, model: str, **kwargs: Any) -> None:
    with pytest.raises(InferenceServerException) as caught:
        client.infer(model, [kwargs.pop("tensor", rows_input(1))], **kwargs)
    assert caught.value.status() == f"StatusCode.{code}", caught.value


def send_traffic(address: str) -> None:
    client = grpcclient.InferenceServerClient(address)
    for i, rows in enumerate(UNARY_ROWS):
        client.infer("add", [rows_input(rows)], request_id=f"req-{i}")
    for _ in range(INVALID):
        expect_code(client, "INVALID_ARGUMENT", "add", tensor=rows_input(1, width=3))
    for i in range(UNKNOWN_MODELS):
        expect_code(client, "NOT_FOUND", f"nope-{i}")
    for _ in range(UNKNOWN_VERSIONS):
        expect_code(client, "NOT_FOUND", "add", model_version="9")
    results: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    for rows in STREAM_ROWS:
        client.async_stream_infer("add", [rows_input(rows)])
    client.async_stream_infer("nope-stream", [rows_input(1)])
    outcomes = [results.get(timeout=30) for _ in range(len(STREAM_ROWS) + 1)]
    client.stop_stream()
    assert sum(error is None for _, error in outcomes) == len(STREAM_ROWS)
    client.close()


@pytest.fixture(scope="module")
def traffic(add_server: ServerProcess, prometheus: Prometheus) -> Prometheus:
    """Send the traffic once; return when Prometheus has scraped all of it."""
    send_traffic(add_server.grpc_address)
    prometheus.wait_for("sum(serving_requests_total)", lambda v: v == TOTAL)
    prometheus.wait_for('sum(serving_inferences_total{model="add"})', lambda v: v == ROWS)
    return prometheus


def test_requests_by_code_and_bounded_labels(traffic: Prometheus) -> None:
    by_code = traffic.query("serving_requests_total")
    counts = {
        (s["metric"]["model"], s["metric"]["version"], s["metric"]["code"]): float(s["value"][1])
        for s in by_code
    }
    assert counts == {
        ("add", "1", "OK"): OK,
        ("add", "_unknown", "INVALID_ARGUMENT"): INVALID,  # failed before a version answered
        ("add", "_unknown", "NOT_FOUND"): UNKNOWN_VERSIONS,
        ("_unknown", "_unknown", "NOT_FOUND"): UNKNOWN_MODELS + 1,
    }
    # Label cardinality: no series anywhere carries a client-invented model name.
    assert traffic.query('count({__name__=~"serving_.+", model=~"nope.*"})') == []
    assert traffic.values('count by (model) ({__name__=~"serving_.+"})', "model").keys() <= {
        "add",
        "_unknown",
        "",  # series without a model label: --frontends N's serving_frontend* (SERVING_TEST_FRONTENDS)
    }
    durations = traffic.values("sum by (version) (serving_request_duration_seconds_count)", "version")
    assert durations == {"1": OK, "_unknown": TOTAL - OK}


def test_batches_stages_and_statistics_agree(traffic: Prometheus, add_server: ServerProcess) -> None:
    v1 = '{model="add",version="1"}'
    executions = traffic.scalar(f"serving_executions_total{v1}")
    assert executions is not None and 0 < executions <= OK
    assert traffic.scalar(f"serving_inferences_total{v1}") == ROWS
    assert traffic.scalar(f"serving_batch_size_count{v1}") == executions
    assert traffic.scalar(f"serving_batch_size_sum{v1}") == ROWS
    stages = traffic.values('serving_stage_duration_seconds_count{model="add",version="1"}', "stage")
    assert stages == {
        "queue": OK,
        "compute_input": executions,
        "compute_infer": executions,
        "compute_output": executions,
    }
    assert traffic.number('sum(serving_stage_duration_seconds_sum{model="add",version="1"})') > 0
    # ModelStatistics is fed by the same events: the numbers are equal, not close.
    client = grpcclient.InferenceServerClient(add_server.grpc_address)
    (stats,) = client.get_inference_statistics("add", "1", as_json=True)["model_stats"]
    assert int(stats["inference_count"]) == ROWS
    assert int(stats["execution_count"]) == executions
    assert int(stats["inference_stats"]["queue"]["count"]) == OK
    assert int(stats["inference_stats"]["success"]["count"]) == OK
    queue_s = int(stats["inference_stats"]["queue"]["ns"]) / 1e9
    assert traffic.scalar(
        'serving_stage_duration_seconds_sum{model="add",version="1",stage="queue"}'
    ) == pytest.approx(queue_s, rel=1e-6, abs=1e-9)


def test_gauges_lifecycle_predictions_and_process(traffic: Prometheus) -> None:
    v1 = '{model="add",version="1"}'
    states = traffic.values(f"serving_model_version_state{v1}", "state")
    assert states["READY"] == 1 and sum(states.values()) == 1
    assert traffic.number(f"serving_model_load_duration_seconds{v1}") > 0
    assert traffic.scalar(f"serving_queue_depth{v1}") == 0  # idle after the traffic
    assert traffic.scalar(f"serving_in_flight_requests{v1}") == 0
    assert traffic.scalar(f"serving_traffic_weight_ratio{v1}") == 1.0  # the only version
    routed = traffic.scalar(f"serving_routed_requests_total{v1}")
    assert routed is not None and routed >= OK  # unpinned requests the router sent to v1
    # Drift monitoring saw every successful request: `y` is numeric, 4 values per row.
    values = traffic.scalar('serving_prediction_value_bucket{model="add",version="1",output="y",le="+Inf"}')
    assert values == ROWS * 4
    assert traffic.number('process_resident_memory_bytes{job="serving"}') > 0
    assert traffic.scalar('up{job="serving"}') == 1


def test_access_log_is_structured_json(traffic: Prometheus, add_server: ServerProcess) -> None:
    entries = []
    for line in add_server.log().splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry["logger"] == "serving.access":
                entries.append(entry)
    assert len(entries) == TOTAL  # sample rate 1: every request, errors included
    assert {e["code"] for e in entries} == {"OK", "INVALID_ARGUMENT", "NOT_FOUND"}
    first = next(e for e in entries if e["request_id"] == "req-0")
    assert (first["model"], first["version"], first["code"]) == ("add", "1", "OK")
    assert first["latency_ms"] > 0
    unknown = [e for e in entries if e["code"] == "NOT_FOUND" and e["version"] == "_unknown"]
    assert {e["model"] for e in unknown} >= {"'nope-0'", "add"}  # unknown names quoted


def test_perf_analyzer_server_block_matches_metrics(
    traffic: Prometheus, add_server: ServerProcess, perf_analyzer_env: dict[str, str]
) -> None:
    v1 = '{model="add",version="1"}'
    before = traffic.scalar(f"serving_inferences_total{v1}")
    assert before is not None
    output = run_perf_analyzer(add_server.grpc_address, "add", perf_analyzer_env, "--concurrency-range", "2")
    served = [int(n) for n in re.findall(r"Server:\s*\n\s*Inference count: (\d+)", output)]
    assert served, output
    client = grpcclient.InferenceServerClient(add_server.grpc_address)
    (stats,) = client.get_inference_statistics("add", "1", as_json=True)["model_stats"]
    total = int(stats["inference_count"])
    # /metrics catches up with ModelStatistics at the next scrape, then they are equal.
    traffic.wait_for(f"serving_inferences_total{v1}", lambda v: v == total)
    assert 0 < served[-1] <= total - before  # the Server block counts its measurement window only
    executions = int(stats["execution_count"])
    traffic.wait_for(f"serving_executions_total{v1}", lambda v: v == executions)
