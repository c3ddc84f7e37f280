"""The bench's parts: its models, its reply check (against a real server), its table and its RSS verdict."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from loadtests.bench import build_repository, median_window, probes
from loadtests.bench_client import Probe, Window, check_reply, measure
from loadtests.bench_extras import rss_flat
from loadtests.bench_raw import RawLimit
from loadtests.bench_servers import Subprocess, rss_bytes, start_noop, start_ours
from loadtests.bench_table import NO_MODEL, OURS, Block, render_block
from loadtests.bench_targets import judge
from serving.proto import inference_pb2 as pb

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_repository(tmp_path_factory.mktemp("bench"), ["mlp_small"])


@pytest.fixture(scope="module")
def ours(bench_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Subprocess]:
    server = start_ours(
        bench_repo, ["mlp_small", "mlp_small_nobatch"], tmp_path_factory.mktemp("log") / "o.log"
    )
    yield server
    assert server.stop() == 0, server.log_tail()


def test_builder_writes_both_configs_and_skips_an_unchanged_model(bench_repo: Path) -> None:
    small = (bench_repo / "mlp_small" / "config.pbtxt").read_text()
    nobatch = (bench_repo / "mlp_small_nobatch" / "config.pbtxt").read_text()
    assert "max_queue_delay_microseconds: 500" in small and "dynamic_batching" not in nobatch
    for text in (small, nobatch):
        assert "max_batch_size: 64" in text and 'string_value: "1"' in text and "KIND_CPU" in text
    again = subprocess.run(
        [sys.executable, str(ROOT / "models" / "bench_builder.py"), str(bench_repo), "--models", "mlp_small"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert again.stdout.strip() == "mlp_small: up to date"


def _reply(values: np.ndarray, raw: bool) -> bytes:
    reply = pb.ModelInferResponse(model_name="m")
    output = reply.outputs.add(name="output", datatype="FP32", shape=list(values.shape))
    if raw:
        reply.raw_output_contents.append(values.astype("<f4").tobytes())
    else:
        output.contents.fp32_contents.extend(values.ravel().tolist())
    return reply.SerializeToString()


def test_check_reply_reads_raw_and_typed_contents_and_names_a_wrong_value() -> None:
    expected = np.array([[0.25, 0.75]], np.float32)
    probe = Probe("m", "input", "output", [np.zeros((1, 2), np.float32)], [expected])
    assert check_reply(probe, 0, _reply(expected, raw=True)) is None
    assert check_reply(probe, 0, _reply(expected, raw=False)) is None
    wrong = check_reply(probe, 0, _reply(np.array([[0.75, 0.25]], np.float32), raw=True))
    assert wrong is not None and "differs from ONNX Runtime by up to 0.5" in wrong
    shape = check_reply(probe, 0, _reply(np.array([[0.25], [0.75]], np.float32), raw=True))
    assert shape is not None and "shape [2, 1]" in shape


def test_replies_of_ours_match_and_a_wrong_expectation_is_caught(ours: Subprocess, bench_repo: Path) -> None:
    probe, _ = probes(bench_repo, "mlp_small", 8)
    window = measure(ours.url, probe, 4, 0.3, 0.05, check_every=1)
    assert window.errors == 0 and window.wrong == [] and window.checked > len(probe.inputs)
    assert window.rows_per_s == pytest.approx(window.requests_per_s * 8)
    swapped = Probe(probe.model, "input", "output", probe.inputs, list(reversed(probe.expected or [])))
    bad = measure(ours.url, swapped, 2, 0.2, 0.05, check_every=1)
    assert bad.wrong and all("differs from ONNX Runtime" in problem for problem in bad.wrong)


def test_unknown_model_is_an_error_not_a_figure(ours: Subprocess, bench_repo: Path) -> None:
    probe, _ = probes(bench_repo, "mlp_small", 1)
    missing = Probe("no_such_model", "input", "output", probe.inputs[:1], None)
    window = measure(ours.url, missing, 1, 0.1, 0.0)
    assert window.errors > 0 and "NOT_FOUND" in window.first_error and not window.latencies_s


def test_no_model_server_runs_as_a_subprocess_and_echoes_the_input(tmp_path: Path, bench_repo: Path) -> None:
    _, blank = probes(bench_repo, "mlp_small", 1)
    server = start_noop(tmp_path / "noop.log")
    try:
        assert rss_bytes(server.pid) > 0
        window = measure(server.url, blank, 2, 0.2, 0.0)
    finally:
        server.stop()
    assert window.errors == 0 and window.latencies_s and window.wrong == [] and window.checked > 16
    assert rss_bytes(server.pid) == 0
    assert blank.expected is not None and np.array_equal(blank.expected[0], blank.inputs[0])


def _window(concurrency: int, requests: int, rows: int = 1) -> Window:
    window = Window(concurrency, rows, elapsed_s=1.0)
    window.latencies_s = [0.001] * requests
    return window


def test_table_rows_and_ratios() -> None:
    block = Block("mlp_small", 8)
    block.rows[NO_MODEL] = {1: _window(1, 1000, 8), 8: _window(8, 2000, 8)}
    block.rows[OURS] = {1: _window(1, 500, 8), 8: _window(8, 1500, 8)}
    lines = render_block(block, [1, 8])
    assert lines[0] == "mlp_small, batch 8 per request: rows/s (req/s x 8) at each concurrency"
    (ours_line,) = [line for line in lines if line.strip().startswith("ours, dynamic")]
    assert ours_line.split()[-4:] == ["4,000", "12,000", "1.00", "ms"]
    (ratio,) = [line for line in lines if "ours / no-model" in line]
    assert ratio.split()[-2:] == ["0.50", "0.75"]


def test_rss_flat_ignores_warm_up_and_judges_the_rest() -> None:
    warm = [50] + [100] * 9 + [101, 99] * 5
    assert rss_flat(warm)[2]
    growing = [100 + i for i in range(20)]
    low, high, flat = rss_flat(growing)
    assert not flat and high > 1.05


def test_targets_are_judged_on_the_runs_own_figures() -> None:
    small = Block("mlp_small", 1)
    small.rows[NO_MODEL] = {1: _window(1, 2000), 32: _window(32, 4000), 64: _window(64, 4000)}
    small.rows[OURS] = {1: _window(1, 600), 32: _window(32, 3300), 64: _window(64, 3100)}
    small.rows[OURS][1].latencies_s = [0.0009] * 600  # p50 0.9 ms against 1 ms + 0.007 ms + 0.3 ms
    small.raw = [RawLimit(1, 100_000, 7e-6, 256, 2_000_000)]
    large = Block("mlp_large", 8)
    large.rows[OURS] = {32: _window(32, 500, 8)}
    large.raw = [RawLimit(1, 1000, 1e-3, 64, 6000)]
    lines = judge([small, large])
    assert "  mlp_small c=32 >= 0.8 x no-model: ours 3,300 vs needed 3,200: met" in lines
    assert "  mlp_small c=64 >= 0.8 x no-model: ours 3,100 vs needed 3,200: NOT met" in lines
    assert "  mlp_large batch 8 c=32 >= 0.7 x raw best rows/s: ours 4,000 vs needed 4,200: NOT met" in lines
    (idle,) = [line for line in lines if "idle" in line]
    assert idle.endswith("ours 0.90 ms vs 1.31 ms: met")
    assert not any("MLServer" in line for line in lines)  # not measured in this run: not judged


def test_median_round_is_shown_and_every_rounds_checks_count() -> None:
    rounds = [_window(8, n) for n in (300, 100, 200)]
    rounds[1].wrong, rounds[1].checked = ["mlp_small: request 3 differs"], 5
    rounds[2].errors, rounds[2].first_error, rounds[2].checked = 2, "UNAVAILABLE: x", 7
    rounds[0].checked = 1
    chosen = median_window(rounds)
    assert chosen is rounds[2] and chosen.requests_per_s == 200
    assert chosen.checked == 13 and chosen.wrong == ["mlp_small: request 3 differs"] and chosen.errors == 2
    assert median_window([_window(1, 10), _window(1, 20)]).requests_per_s == 10  # the lower of two
