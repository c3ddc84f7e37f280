"""The three digits candidates rolled out through the real server, under load from `loadtests`.

Each test follows the operator's path of docs/rollout.md ("Worked example") on a copy of the example
repository: a server serving digits 1 and 2, the baseline pinned (`serving ctl promote digits 2`), a
candidate from models/candidates/digits copied in as digits/3 and loaded (`serving ctl load digits`); then
loadtests/scenarios/rollout-digits.json, as committed, drives load while its exec action starts
`serving ctl rollout digits --to 3 ...` (steps 25% and 50%, 200 requests a side per verdict).

    good   (another seed)        promoted: every gate passes
    slow   (CPU burn per batch)  rolled back on latency (the scenario's latency gate, p50)
    wrong  (classes rotated)     rolled back on drift at the first step (PSI of the predicted classes)

Each with zero failed client requests (the scenario's SLO is errors<=0) and the decision and its evidence
in `serving ctl history`.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from serving.cli import main
from tests.servers import ROOT, ServerProcess, start_server

pytestmark = pytest.mark.integration

SCENARIO = ROOT / "loadtests" / "scenarios" / "rollout-digits.json"
# the latency gate the scenario sets (p50 in CI: see docs/rollout.md, "Worked example")
LATENCY_GATE = re.findall(r"\b(p[0-9]+)<=", SCENARIO.read_text())[0]
TERMINAL = {"promoted", "rolled_back"}


@dataclass
class Rollout:
    report: dict[str, Any]  # the loadtests JSON result
    status: dict[str, Any]  # serving ctl rollout digits --status --json, after the run
    history: list[dict[str, Any]]  # serving ctl history digits --json
    metrics: str  # /metrics after the run

    @property
    def decision(self) -> dict[str, Any]:
        return self.history[-1]

    def steps_taken(self) -> list[dict[str, Any]]:
        """The history entries after the rollout's start: advances and the final decision."""
        starts = [i for i, entry in enumerate(self.history) if entry["action"] == "rollout"]
        return self.history[starts[-1] + 1 :]

    def verdicts(self) -> dict[str, str]:
        return {gate["gate"]: gate["verdict"] for gate in self.decision["evidence"]["gates"]}


def ctl(server: ServerProcess, *args: str) -> str:
    """`serving ctl --url SERVER ARGS...` through the CLI's own entry point, in this process (the scenario
    runs it as a subprocess; here a Python start per call would double the test's time)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["ctl", "--url", server.grpc_address, *args])
    assert code == 0, f"{shlex.join(args)}: {err.getvalue()}\n{server.log()[-3000:]}"
    return out.getvalue()


def weights(server: ServerProcess) -> dict[str, int]:
    """The policy in force as version -> weight, from `serving ctl policy digits` ("digits: 2=0 3=100 ...")."""
    first = ctl(server, "policy", "digits").splitlines()[0]
    pairs = (token.split("=", 1) for token in first.split()[1:] if "=" in token)
    return {version: int(weight) for version, weight in pairs if version.isdigit()}


def scenario_for_this_checkout(path: Path) -> dict[str, Any]:
    """The committed scenario with its `serving` commands run by this interpreter (so this checkout's
    serving package answers) and its relative inputs made absolute, as they are relative to the file."""
    document: dict[str, Any] = json.loads(SCENARIO.read_text())
    for target in document["targets"]:
        source = target.get("inputs", "random")
        if source.startswith("sample:") and not Path(source[7:]).is_absolute():
            target["inputs"] = "sample:" + str((SCENARIO.parent / source[7:]).resolve())
    for action in document["actions"]:
        if action["type"] == "exec":
            assert action["command"].startswith("serving ctl "), action
            action["command"] = f"{shlex.quote(sys.executable)} -m {action['command']}"
    path.write_text(json.dumps(document))
    return document


@pytest.fixture
def repository(example_models: Path, tmp_path: Path) -> Path:
    return tmp_path / "repo"


@pytest.fixture
def server(example_models: Path, repository: Path, tmp_path: Path) -> Iterator[ServerProcess]:
    """digits 1 and 2 from the example repository, on a copy the test adds version 3 to."""
    shutil.copytree(
        example_models / "digits", repository / "digits", ignore=shutil.ignore_patterns(".staging-*")
    )
    process = start_server(repository, tmp_path / "server.log", "--load-model", "digits")
    yield process
    assert process.stop() == 0, process.log()[-3000:]


def roll_out(server: ServerProcess, repository: Path, tmp_path: Path, candidate: str) -> Rollout:
    source = ROOT / "models" / "candidates" / "digits" / candidate
    assert (source / "model.pt").is_file(), f"{source} is missing: run `serving models build`"
    ctl(server, "promote", "digits", "2")
    shutil.copytree(source, repository / "digits" / "3")
    ctl(server, "load", "digits")
    assert weights(server) == {"2": 100}, "loading version 3 moved traffic to it"

    scenario = tmp_path / "rollout.json"
    scenario_for_this_checkout(scenario)
    command = [sys.executable, "-m", "loadtests", "scenario", str(scenario), "--url", server.grpc_address]
    command += ["--json", str(tmp_path / "result.json"), "--progress", "none"]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}\n{server.log()[-3000:]}"

    status = json.loads(ctl(server, "rollout", "digits", "--status", "--json"))
    history = json.loads(ctl(server, "history", "digits", "--json"))
    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        metrics = response.read().decode()
    rollout = Rollout(json.loads((tmp_path / "result.json").read_text()), status, history, metrics)
    started, decided = (entry["time"] for entry in (history[-1 - len(rollout.steps_taken())], history[-1]))
    latency = rollout.report["targets"][0]["summary"]["latency_ms"]
    print(
        f"\n{candidate}: {rollout.decision['action']} ({started} -> {decided}): {rollout.decision['reason']}"
    )
    print(f"{candidate}: clients p50 {latency['p50']:.1f} ms, p99 {latency['p99']:.1f} ms")
    return rollout


def check_clients_saw_no_failure(rollout: Rollout) -> set[str]:
    """Zero failed requests, the rollout action ran; returns the versions that answered clients."""
    (target,) = rollout.report["targets"]
    summary = target["summary"]
    assert summary["errors"] == {} and summary["ok"] == summary["requests"] > 1000, summary
    (action,) = rollout.report["actions"]
    assert action["ok"], action
    return {share["version"] for share in target["versions"]}


def check_decision_in_history(rollout: Rollout, action: str, phase: str) -> None:
    assert rollout.status["phase"] == phase, json.dumps([rollout.status, rollout.history[-1]], indent=1)
    assert rollout.decision["action"] == action, rollout.history[-3:]
    assert rollout.decision["reason"] and rollout.decision["evidence"]["gates"], rollout.decision
    started = [entry["action"] for entry in rollout.history].index("rollout")
    assert all(entry["action"].startswith("rollout") for entry in rollout.history[started:]), rollout.history
    assert f'serving_rollout_phase{{model="digits",phase="{phase}"}} 1.0' in rollout.metrics


def test_good_candidate_is_promoted(server: ServerProcess, repository: Path, tmp_path: Path) -> None:
    rollout = roll_out(server, repository, tmp_path, "good")
    served = check_clients_saw_no_failure(rollout)
    check_decision_in_history(rollout, "rollout-promote", "promoted")
    assert set(rollout.verdicts().values()) <= {"pass", "skipped"}, rollout.decision
    assert served == {"2", "3"} and rollout.status["candidate_percent"] == 100
    assert {v: w for v, w in weights(server).items() if w} == {"3": 100}
    actions = [entry["action"] for entry in rollout.history]
    assert actions.count("rollout-advance") == 1, actions  # 25% -> 50%, then promoted
    assert 'serving_rollout_decisions_total{decision="promote",model="digits"} 1.0' in rollout.metrics


def test_slow_candidate_is_rolled_back_on_latency(
    server: ServerProcess, repository: Path, tmp_path: Path
) -> None:
    rollout = roll_out(server, repository, tmp_path, "slow")
    check_clients_saw_no_failure(rollout)
    check_decision_in_history(rollout, "rollout-rollback", "rolled_back")
    assert rollout.status["failed_gate"] == LATENCY_GATE, rollout.status
    assert rollout.verdicts()[LATENCY_GATE] == "fail" and rollout.verdicts()["errors"] != "fail", (
        rollout.decision
    )
    (latency,) = [gate for gate in rollout.decision["evidence"]["gates"] if gate["gate"] == LATENCY_GATE]
    assert latency["statistic"] > latency["threshold"] and latency["lower"] > latency["threshold"], latency
    assert {v: w for v, w in weights(server).items() if w} == {"2": 100}
    assert 'serving_rollout_decisions_total{decision="rollback",model="digits"} 1.0' in rollout.metrics


def test_wrong_candidate_is_rolled_back_on_drift(
    server: ServerProcess, repository: Path, tmp_path: Path
) -> None:
    rollout = roll_out(server, repository, tmp_path, "wrong")
    check_clients_saw_no_failure(rollout)
    check_decision_in_history(rollout, "rollout-rollback", "rolled_back")
    assert rollout.status["failed_gate"] in {"agreement", "drift"}, rollout.status
    failed = {gate for gate, verdict in rollout.verdicts().items() if verdict == "fail"}
    assert failed and failed <= {"agreement", "drift"}, rollout.decision
    (drift,) = [gate for gate in rollout.decision["evidence"]["gates"] if gate["gate"] == "drift"]
    assert drift["lower"] > drift["threshold"], drift
    assert "rollout-advance" not in [entry["action"] for entry in rollout.history], "passed the first step"
    assert {v: w for v, w in weights(server).items() if w} == {"2": 100}
