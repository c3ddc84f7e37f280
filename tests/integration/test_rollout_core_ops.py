"""A rollout survives a restart at the same step (never further); pause, resume, abort; bad requests."""

from __future__ import annotations

import json
import time
from pathlib import Path

import grpc
import pytest

from serving.proto import admin_pb2 as apb
from serving.proto import admin_pb2_grpc
from tests.integration.test_rollout_core import ctl, history, load, repository, status
from tests.servers import ServerProcess, start_server

pytestmark = pytest.mark.integration


def rollout_of(server: ServerProcess) -> apb.RolloutStatus:
    with grpc.insecure_channel(server.grpc_address) as channel:
        reply: apb.RolloutStatus = admin_pb2_grpc.ModelAdminStub(channel).GetRollout(  # type: ignore[no-untyped-call]
            apb.ModelRef(model="m"), timeout=10
        )
    return reply


def test_a_restart_resumes_at_the_same_step_and_never_further(tmp_path: Path) -> None:
    repo = repository(tmp_path / "repo", {1: 1.0, 2: 1.0})
    server = start_server(repo, tmp_path / "a.log")
    try:
        ctl(server, "promote", "m", "1")
        flags = ["--step-time", "3s", "--min-requests", "30", "--steps", "20,50,80", "--gate", "errors<=+5pp"]
        with load(server) as failures:
            ctl(server, "rollout", "m", "--to", "2", *flags)
            deadline = time.monotonic() + 60
            while rollout_of(server).step < 1:  # polled over gRPC: the step lasts 3 s at least
                assert time.monotonic() < deadline, server.log()[-3000:]
                time.sleep(0.05)
            assert failures() == []
        # no load: the step cannot be decided (no requests in its interval), so it stays at 50 %
        assert (rollout_of(server).step, rollout_of(server).candidate_percent) == (1, 50.0)
    finally:
        assert server.stop() == 0, server.log()[-3000:]
    server = start_server(repo, tmp_path / "b.log")
    try:
        time.sleep(6)  # longer than a step (2 s settling + 3 s): a restart must not count the time before it
        resumed = status(server)
        assert (resumed["phase"], resumed["step"], resumed["candidate_percent"]) == ("canary", 1, 50.0)
        assert "waiting for 30 requests per side" in str(resumed["reason"])
        assert ctl(server, "policy", "m").stdout.startswith("m: 1=50 2=50 rollout=canary")
        paused = json.loads(ctl(server, "rollout", "m", "--pause", "--json").stdout)
        assert (paused["phase"], paused["paused_phase"]) == ("paused", "canary")
        resumed = json.loads(ctl(server, "rollout", "m", "--resume", "--json").stdout)
        assert resumed["phase"] == "canary" and resumed["step"] == 1
        aborted = json.loads(ctl(server, "rollout", "m", "--abort", "--json").stdout)
        assert (aborted["phase"], aborted["candidate_percent"]) == ("rolled_back", 0.0)
        assert ctl(server, "policy", "m").stdout.startswith("m: 1=100 rollout=rolled_back")
        actions = [e["action"] for e in history(server)]
        assert actions[-3:] == ["rollout-pause", "rollout-resume", "rollout-abort"]
        assert "aborted by" in str(history(server)[-1]["reason"])
        again = ctl(server, "rollout", "m", "--abort", check=False)
        assert again.returncode == 1 and "no rollout to abort" in again.stderr
    finally:
        assert server.stop() == 0, server.log()[-3000:]


def test_bad_rollout_requests_get_precise_errors(tmp_path: Path) -> None:
    repo = repository(tmp_path / "repo", {1: 1.0, 2: 1.0})
    server = start_server(repo, tmp_path / "a.log")
    try:
        usage = ctl(server, "rollout", "m", "--to", "2", "--gate", "errors<=5%", check=False)
        assert usage.returncode == 2 and "is not one of" in usage.stderr
        usage = ctl(server, "rollout", "m", "--to", "2", "--step-time", "soon", check=False)
        assert usage.returncode == 2 and "--step-time" in usage.stderr
        missing = ctl(server, "rollout", "m", "--to", "7", check=False)
        assert missing.returncode == 1 and "FAILED_PRECONDITION" in missing.stderr
        assert json.loads(ctl(server, "rollout", "m", "--status", "--json").stdout)["phase"] == "idle"
        ctl(server, "split", "m", "1=50", "2=50")
        split = ctl(server, "rollout", "m", "--to", "2", check=False)
        assert split.returncode == 1 and "splits its traffic" in split.stderr
        ctl(server, "promote", "m", "1")
        ctl(server, "rollout", "m", "--to", "2", "--step-time", "30s")
        twice = ctl(server, "rollout", "m", "--to", "2", check=False)
        assert twice.returncode == 1 and "already has a rollout" in twice.stderr
        ctl(server, "split", "m", "1=100")  # a manual change supersedes the rollout
        time.sleep(1.5)
        assert status(server)["phase"] == "idle"
    finally:
        assert server.stop() == 0, server.log()[-3000:]
