"""The command line as a release pipeline uses it: exit codes, the one-line verdict, files written."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtests.selfcost import PACKAGE_PARENT, noop_server_process


def loadtests(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loadtests", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=PACKAGE_PARENT,
    )


@pytest.fixture(scope="module")
def noop_url() -> Iterator[str]:
    """A no-op server in its own process, shared by this module's tests."""
    loop = asyncio.new_event_loop()
    context = noop_server_process(["--versions", "1=70,2=30", "--sticky"])
    url = loop.run_until_complete(context.__aenter__())
    yield url
    loop.run_until_complete(context.__aexit__(None, None, None))
    loop.close()


def test_run_that_meets_its_slo_exits_0_and_writes_reports(noop_url: str, tmp_path: Path) -> None:
    out = loadtests(
        "run",
        "--url",
        noop_url,
        "--model",
        "noop",
        "--concurrency",
        "2",
        "--duration",
        "1s",
        "--warmup",
        "0.2s",
        "--routing-keys",
        "uniform:500",
        "--expect-split",
        "1=70,2=30",
        "--slo",
        "p99<2s,errors<0.1%,throughput>=10/s",
        "--json",
        str(tmp_path / "r.json"),
        "--html",
        str(tmp_path / "r.html"),
    )
    assert out.returncode == 0, out.stderr
    verdict = out.stdout.strip().splitlines()[-1]
    assert verdict.startswith("PASS noop: ") and "split by keys" in verdict
    document = json.loads((tmp_path / "r.json").read_text())
    assert document["kind"] == "run" and document["verdict"]["passed"]
    assert "<svg" in (tmp_path / "r.html").read_text()


def test_run_that_breaks_its_slo_exits_1(noop_url: str) -> None:
    out = loadtests(
        "run",
        "--url",
        noop_url,
        "--model",
        "noop",
        "--rate",
        "50",
        "--duration",
        "1s",
        "--warmup",
        "0s",
        "--slo",
        "p50<1us",
    )
    assert out.returncode == 1
    assert out.stdout.strip().splitlines()[-1].startswith("FAIL noop: p50 ")


def test_malformed_slo_exits_2_with_a_clear_message() -> None:
    out = loadtests("run", "--model", "noop", "--concurrency", "1", "--slo", "p99<25")
    assert out.returncode == 2 and "a latency needs a unit" in out.stderr and out.stdout == ""


def test_unreachable_server_exits_3() -> None:
    out = loadtests(
        "run", "--url", "127.0.0.1:1", "--model", "noop", "--concurrency", "1", "--duration", "1s"
    )
    assert out.returncode == 3 and "ModelMetadata for 'noop'" in out.stderr


def test_compare_saved_runs_and_render_them(noop_url: str, tmp_path: Path) -> None:
    for name in ("a", "b"):
        loadtests(
            "run",
            "--url",
            noop_url,
            "--model",
            "noop",
            "--concurrency",
            "1",
            "--duration",
            "1s",
            "--interval",
            "0.25s",
            "--warmup",
            "0s",
            "--json",
            str(tmp_path / f"{name}.json"),
        )
    out = loadtests(
        "compare",
        "--baseline",
        str(tmp_path / "a.json"),
        "--candidate",
        str(tmp_path / "b.json"),
        "--json",
        str(tmp_path / "c.json"),
        "--html",
        str(tmp_path / "c.html"),
    )
    assert out.returncode in (0, 1), out.stderr
    assert out.stdout.strip().splitlines()[-1].split(" ")[0] in ("NO", "SLOWER", "FASTER", "INCONCLUSIVE")
    out = loadtests(
        "compare", "--baseline", str(tmp_path / "a.json"), "--candidate-version", "2", "--url", noop_url
    )
    assert out.returncode in (0, 1), (
        out.stderr
    )  # the live side mirrors the saved run's model, load and timing
    assert "candidate v2 vs baseline" in out.stdout.strip().splitlines()[-1]
    out = loadtests("report", str(tmp_path / "c.json"), "--html", str(tmp_path / "again.html"))
    assert out.returncode == 0 and "Compare" in (tmp_path / "again.html").read_text()


def test_selfcost_reports_the_generators_ceiling() -> None:
    out = loadtests("selfcost", "--duration", "1s", "--concurrency", "8", "--progress", "none")
    assert out.returncode == 0, out.stderr
    assert "generator vs no-op server:" in out.stdout and "µs/request" in out.stdout
