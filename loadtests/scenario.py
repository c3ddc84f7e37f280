"""Scenario files (JSON): several models at once, and operator actions on the timeline.

    {
      "url": "127.0.0.1:8001",                     optional; --url wins
      "duration": "60s", "warmup": "2s", "interval": "1s",
      "workers": 1, "connections": 1, "seed": 0,
      "slo": "p99<25ms,errors<0.1%",               default gate for every target
      "window": "5s",                              stats before/after each action
      "targets": [
        {"model": "digits", "concurrency": 4, "routing_keys": "zipf:10000:1.1",
         "expect_split": {"1": 50, "3": 50}},
        {"model": "resnet50", "version": "1", "rate": 50, "poisson": true, "batch": 4,
         "inputs": "sample:models", "shapes": {"input": [3, 224, 224]}, "timeout": "5s", "slo": "p99<200ms"}
      ],
      "actions": [
        {"at": "20s", "type": "load", "model": "digits", "parameters": {"version": "3"}},
        {"at": "40s", "type": "exec", "command": "serving ctl --url {url} split digits 1=50 3=50"}
      ]
    }

Unknown keys are errors (a typo must not silently change a gate). Relative input paths are
relative to the scenario file. ``{url}`` in an exec command becomes the server address.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from loadtests.actions import Action, ActionError, ExecAction, parse_action
from loadtests.inputs import InputSpec
from loadtests.keys import parse_keys
from loadtests.plan import LoadShape, PlanError, TargetSpec, Timing
from loadtests.slo import Slo, parse_slo
from loadtests.units import parse_duration

TOP_KEYS = {
    "url",
    "duration",
    "warmup",
    "interval",
    "workers",
    "connections",
    "seed",
    "slo",
    "window",
    "targets",
    "actions",
    "description",
}
TARGET_KEYS = {
    "model",
    "version",
    "name",
    "concurrency",
    "rate",
    "poisson",
    "batch",
    "inputs",
    "shapes",
    "routing_keys",
    "timeout",
    "slo",
    "expect_split",
}


class ScenarioError(ValueError):
    """A scenario file that does not parse or validate; the message names the place."""


@dataclass(frozen=True)
class Scenario:
    url: str | None
    timing: Timing
    workers: int
    connections: int
    seed: int
    slo: Slo | None
    window_s: float
    targets: tuple[TargetSpec, ...]
    actions: tuple[Action, ...]

    def with_url(self, url: str) -> Scenario:
        actions = tuple(
            replace(a, command=a.command.replace("{url}", url)) if isinstance(a, ExecAction) else a
            for a in self.actions
        )
        return replace(self, url=url, actions=actions)


def load_scenario(path: Path) -> Scenario:
    try:
        document = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ScenarioError(f"{path}: {err}") from None
    try:
        return parse_scenario(document, path.parent)
    except (ScenarioError, PlanError, ActionError, ValueError) as err:
        raise ScenarioError(f"{path}: {err}") from None


def _unknown(where: str, entry: Mapping[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(entry) - allowed)
    if extra:
        raise ScenarioError(f"{where}: unknown key(s) {extra}; allowed: {sorted(allowed)}")


def parse_scenario(document: Any, base: Path) -> Scenario:
    if not isinstance(document, dict):
        raise ScenarioError("a scenario is a JSON object")
    _unknown("scenario", document, TOP_KEYS)
    timing = Timing(
        parse_duration(document.get("duration", "30s")),
        parse_duration(document.get("warmup", "1s")),
        parse_duration(document.get("interval", "1s")),
    )
    targets = document.get("targets")
    if not isinstance(targets, list) or not targets:
        raise ScenarioError('scenario needs "targets": a non-empty list')
    specs = tuple(_target(i, t, base) for i, t in enumerate(targets))
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise ScenarioError(f'target names must differ (give "name"): {labels}')
    actions = tuple(_action(i, a, timing) for i, a in enumerate(document.get("actions", [])))
    slo = document.get("slo")
    return Scenario(
        url=document.get("url"),
        timing=timing,
        workers=int(document.get("workers", 1)),
        connections=int(document.get("connections", 1)),
        seed=int(document.get("seed", 0)),
        slo=parse_slo(slo) if slo else None,
        window_s=parse_duration(document.get("window", "5s")),
        targets=specs,
        actions=actions,
    )


def _target(index: int, entry: Any, base: Path) -> TargetSpec:
    where = f"targets[{index}]"
    if not isinstance(entry, dict) or not isinstance(entry.get("model"), str):
        raise ScenarioError(f'{where}: needs "model" (a string)')
    _unknown(where, entry, TARGET_KEYS)
    load = LoadShape(
        int(entry.get("concurrency", 0)), float(entry.get("rate", 0.0)), bool(entry.get("poisson", False))
    )
    shapes = {str(k): tuple(int(d) for d in v) for k, v in entry.get("shapes", {}).items()}
    expect = entry.get("expect_split")
    if expect is not None and (not isinstance(expect, dict) or not expect):
        raise ScenarioError(f'{where}: expect_split maps versions to weights, e.g. {{"1": 50, "2": 50}}')
    return TargetSpec(
        model=entry["model"],
        load=load,
        version=str(entry.get("version", "")),
        name=str(entry.get("name", "")),
        batch=int(entry.get("batch", 1)),
        inputs=InputSpec(_inputs(str(entry.get("inputs", "random")), base), shapes),
        keys=parse_keys(entry["routing_keys"]) if entry.get("routing_keys") else None,
        timeout_s=parse_duration(entry.get("timeout", "10s")),
        slo=parse_slo(entry["slo"]) if entry.get("slo") else None,
        expect_split={str(k): float(v) for k, v in expect.items()} if expect else None,
    )


def _inputs(source: str, base: Path) -> str:
    if source == "random":
        return source
    if source.startswith("sample:"):
        folder = Path(source[7:])
        return "sample:" + str(folder if folder.is_absolute() else base / folder)
    path = Path(source)
    return str(path if path.is_absolute() else base / path)


def _action(index: int, entry: Any, timing: Timing) -> Action:
    if not isinstance(entry, dict) or "at" not in entry:
        raise ScenarioError(f'actions[{index}]: needs "at" (seconds from the start of measurement)')
    at_s = parse_duration(entry["at"])
    if not 0 <= at_s < timing.duration_s:
        raise ScenarioError(f"actions[{index}]: at {at_s:g}s is outside the run (0..{timing.duration_s:g}s)")
    return parse_action(at_s, {k: v for k, v in entry.items() if k != "at"})
