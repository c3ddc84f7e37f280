"""The served-vs-raw benchmark runs end to end (briefly) against the real server; figures are not judged."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from loadtests import commands, served_vs_raw, sidebyside
from tests.conftest import MODELS
from tests.servers import ServerProcess

pytestmark = pytest.mark.integration


def test_served_vs_raw_prints_side_by_side_ratios(
    live_server: ServerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    code = served_vs_raw.main(
        [
            "--url",
            live_server.grpc_address,
            "--model-repository",
            str(MODELS),
            "--model",
            "digits",
            "--version",
            "2",
            "--duration",
            "0.3",
            "--concurrency",
            "4",
            "--batch",
            "8",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "model digits v2 (pytorch_libtorch)" in out
    for line in (
        "raw    batch 1",
        "raw    batch 8",
        "served c=4",
        "served / raw batch 1",
        "served p50 / raw batch-1 p50",
    ):
        assert line in out, out


def test_bench_prints_the_table_with_every_reply_verified(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`python -m loadtests bench` at tiny size: builds the model, starts and stops both servers itself."""
    args = ["bench", "--models", "mlp_small", "--batch", "1,8", "--concurrency", "1,4"]
    args += ["--duration", "0.3s", "--warmup", "0.1s", "--work-dir", str(tmp_path), "--check-every", "1"]
    code = commands.main(args)
    out = capsys.readouterr().out
    assert code == 0, out
    for line in (
        "mlp_small, batch 1 per request: req/s at each concurrency",
        "mlp_small, batch 8 per request: rows/s (req/s x 8) at each concurrency",
        "no-model gRPC server (transport ceiling)",
        "ours, dynamic batching (delay 500 us)",
        "ours, no dynamic_batching",
        "ratio ours / no-model",
        "raw ONNX Runtime in process, 1 thread: batch 1",
        "raw ONNX Runtime in process, 2 threads: batch 1",
    ):
        assert line in out, out
    verdict = out.strip().splitlines()[-1]
    checked = int(verdict.split(": ")[1].split()[0])
    assert verdict.endswith("0 wrong, 0 errors: PASS") and checked > 4 * 16, out
    assert (
        list(tmp_path.glob("logs/*.log")) and (tmp_path / "repo" / "mlp_small" / "1" / "model.onnx").is_file()
    )


def test_served_vs_raw_spreads_clients_over_processes_and_reports_idle_p50(
    live_server: ServerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    """The GPU check's shape of the bench (many client processes, best raw batch, idle p50), on the CPU."""
    args = ["--url", live_server.grpc_address, "--model-repository", str(MODELS), "--model", "digits"]
    args += ["--version", "2", "--duration", "0.3", "--concurrency", "4", "--client-processes", "2"]
    code = served_vs_raw.main([*args, "--raw-batches", "4,8", "--idle", "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "served c=4   1 row:" in out and "(2 client process(es))" in out, out
    assert "raw    batch 4  :" in out and "raw    batch 8  :" in out and out.count("(best)") == 1, out
    assert "idle (c=1) p50 " in out and "target served >= 0.8 x raw best batch: " in out, out
    assert "target idle p50 <= raw batch-1 p50 + 1 ms: " in out, out


def test_side_by_side_measures_each_checkout_and_the_no_model_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`python -m loadtests.sidebyside` at tiny size: this checkout twice (two names), every reply checked."""
    args = ["--checkout", "a=.", "--checkout", "b=.", "--server-args", "b=--frontends 1"]
    args += ["--rounds", "1", "--duration", "0.3s", "--concurrency", "2", "--work-dir", str(tmp_path)]
    code = sidebyside.main(args)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "mlp_small, batch 1, c=2: 1 interleaved 0.3s windows" in out, out
    for name in ("a", "b", "no-model"):
        line = rf"^  {name} +median +[\d,]+ req/s, server CPU +\d+ us/request \(event loop +\d+\), p50 [\d.]+ ms"
        assert re.search(line, out, re.M), out
