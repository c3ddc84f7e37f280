"""A scenario whose operator actions call `serving ctl` to move traffic while the load runs.

The whole path as a release pipeline runs it: `python -m loadtests scenario FILE.json` against a real
server, with `exec` actions that run the `serving ctl` console script (`{url}` filled in by the tool).
Version N of the `add` model computes x + N; without a policy the highest READY version (2) serves.

    0 s ─ v2 ─ 2 s split 1=100 ─ v1 ─ 4 s split 1=50 2=50 ─ v1+v2 ─ 6 s promote 2 ─ v2 ─ 8 s
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.model_factory import write_add_repository
from tests.servers import ROOT, ServerProcess, start_server

SERVING = Path(sys.executable).parent / "serving"
DURATION_S = 8.0
INTERVAL_S = 0.5


@pytest.fixture
def add_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server on a fresh repository with `add` versions 1 and 2; it must stop cleanly."""
    repository = write_add_repository(tmp_path / "repo", "add", versions=(1, 2))
    server = start_server(repository, tmp_path / "server.log")
    yield server
    assert server.stop() == 0, server.log()[-3000:]


def ctl(*args: str) -> str:
    """An exec command running this venv's `serving ctl` on the scenario's server."""
    return f"{shlex.quote(str(SERVING))} ctl --url {{url}} {shlex.join(args)}"


def versions_between(intervals: Sequence[Mapping[str, Any]], start_s: float, end_s: float) -> set[str]:
    """Versions that answered requests sent in the intervals lying wholly within [start_s, end_s)."""
    inside = [i for i in intervals if i["t"] >= start_s and i["t"] + INTERVAL_S <= end_s]
    assert inside, f"no whole interval within [{start_s:.2f}s, {end_s:.2f}s)"
    return {version for interval in inside for version in interval["versions"]}


def test_ctl_actions_move_traffic_mid_run(add_server: ServerProcess, tmp_path: Path) -> None:
    steps = [
        (2.0, ("split", "add", "1=100")),
        (4.0, ("split", "add", "1=50", "2=50")),
        (6.0, ("promote", "add", "2")),
    ]
    scenario = {
        "duration": f"{DURATION_S:g}s",
        "warmup": "0.5s",
        "interval": f"{INTERVAL_S:g}s",
        "window": "1.5s",
        "slo": "errors<=0",
        "targets": [{"model": "add", "concurrency": 4}],
        "actions": [{"at": f"{at:g}s", "type": "exec", "command": ctl(*args)} for at, args in steps],
    }
    path = tmp_path / "ctl.json"
    path.write_text(json.dumps(scenario))
    out = subprocess.run(
        [sys.executable, "-m", "loadtests", "scenario", str(path), "--url", add_server.grpc_address]
        + ["--json", str(tmp_path / "r.json"), "--html", str(tmp_path / "r.html"), "--progress", "none"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert out.returncode == 0, f"{out.stdout}\n{out.stderr}\n{add_server.log()[-3000:]}"
    document = json.loads((tmp_path / "r.json").read_text())
    (target,) = document["targets"]
    summary = target["summary"]
    assert summary["errors"] == {} and summary["ok"] == summary["requests"] > 400, summary

    actions = document["actions"]
    assert [(a["at_s"], a["action"]) for a in actions] == [
        (at, f"exec {ctl(*args).replace('{url}', add_server.grpc_address)}") for at, args in steps
    ]
    for action in actions:
        assert action["ok"] and action["detail"].startswith("exit 0: add: "), action
        assert action["at_s"] <= action["started_s"] <= action["finished_s"] < DURATION_S, action
        for window in action["windows"]:
            assert window["before"]["errors"] == {} and window["after"]["errors"] == {}, window
    split_all_to_1, split_half, promote = actions

    served = {share["version"]: share["count"] for share in target["versions"]}
    assert set(served) == {"1", "2"} and min(served.values()) > 50, served
    intervals = target["intervals"]
    assert versions_between(intervals, 0.0, split_all_to_1["started_s"]) == {"2"}
    assert versions_between(intervals, split_all_to_1["finished_s"], split_half["started_s"]) == {"1"}
    assert versions_between(intervals, split_half["finished_s"], promote["started_s"]) == {"1", "2"}
    assert versions_between(intervals, promote["finished_s"], DURATION_S) == {"2"}
    # the report's before/after windows: nothing sent after an action counts as before it
    assert set(split_all_to_1["windows"][0]["before"]["versions"]) == {"2"}
    assert "2" in promote["windows"][0]["after"]["versions"]

    html = (tmp_path / "r.html").read_text()
    assert html.startswith("<!doctype html>") and "<svg" in html and "Operator actions" in html
    assert all(a["action"] in html for a in actions), "an action is missing from the report"
