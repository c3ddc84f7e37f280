"""Scenario files: parsing, validation messages, paths, {url}."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadtests.actions import ExecAction, RepositoryAction
from loadtests.scenario import ScenarioError, load_scenario

GOOD = {
    "duration": "30s",
    "warmup": "2s",
    "slo": "p99<25ms,errors<0.1%",
    "targets": [
        {
            "model": "digits",
            "concurrency": 4,
            "routing_keys": "zipf:10000:1.1",
            "expect_split": {"1": 50, "3": 50},
        },
        {
            "model": "resnet50",
            "version": "1",
            "rate": 50,
            "poisson": True,
            "batch": 4,
            "inputs": "data/x.npz",
            "shapes": {"input": [3, 224, 224]},
            "timeout": "5s",
            "slo": "p99<200ms",
        },
    ],
    "actions": [
        {"at": "20s", "type": "load", "model": "digits", "parameters": {"version": "3", "force": True}},
        {"at": 25, "type": "exec", "command": "serving ctl --url {url} split digits 1=50 3=50"},
        {"at": "29s", "type": "unload", "model": "digits", "metadata": {"Authorization": "Bearer x"}},
    ],
}


def write(tmp_path: Path, document: object) -> Path:
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps(document))
    return path


def test_a_full_scenario(tmp_path: Path) -> None:
    scenario = load_scenario(write(tmp_path, GOOD)).with_url("127.0.0.1:9")
    assert scenario.timing.duration_s == 30 and scenario.timing.warmup_s == 2
    digits, resnet = scenario.targets
    assert (
        digits.keys is not None and digits.keys.n == 10000 and digits.expect_split == {"1": 50.0, "3": 50.0}
    )
    assert resnet.load.rate == 50 and resnet.load.poisson and resnet.batch == 4 and resnet.timeout_s == 5
    assert resnet.inputs.source == str(tmp_path / "data" / "x.npz")
    assert resnet.inputs.shapes == {"input": (3, 224, 224)} and resnet.slo is not None
    load, split, unload = scenario.actions
    assert isinstance(load, RepositoryAction) and load.parameters == {"version": "3", "force": True}
    assert (
        isinstance(split, ExecAction)
        and split.command == "serving ctl --url 127.0.0.1:9 split digits 1=50 3=50"
    )
    assert isinstance(unload, RepositoryAction) and unload.metadata == (("authorization", "Bearer x"),)


@pytest.mark.parametrize(
    "change, says",
    [
        ({"targetz": []}, "unknown key"),
        ({"targets": []}, "non-empty list"),
        ({"targets": [{"model": "m", "concurrency": 1, "concurency": 2}]}, "unknown key"),
        ({"targets": [{"model": "m"}]}, "exactly one of concurrency"),
        ({"targets": [{"model": "m", "concurrency": 1, "rate": 5}]}, "exactly one of concurrency"),
        ({"targets": [{"model": "m", "concurrency": 1}, {"model": "m", "rate": 1}]}, "names must differ"),
        ({"slo": "p99<25"}, "needs a unit"),
        ({"actions": [{"at": "40s", "type": "load", "model": "m"}]}, "outside the run"),
        ({"actions": [{"at": "1s", "type": "promote"}]}, "unknown type 'promote'"),
        ({"actions": [{"at": "1s", "type": "exec"}]}, 'needs "command"'),
        ({"actions": [{"type": "exec", "command": "x"}]}, 'needs "at"'),
        ({"targets": [{"model": "m", "concurrency": 1, "routing_keys": "zipf:10"}]}, "exponent"),
    ],
)
def test_bad_scenarios_name_the_problem(tmp_path: Path, change: dict[str, object], says: str) -> None:
    with pytest.raises(ScenarioError, match=says):
        load_scenario(write(tmp_path, GOOD | change))


def test_not_json(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text("targets: []")
    with pytest.raises(ScenarioError, match="s.json"):
        load_scenario(path)
