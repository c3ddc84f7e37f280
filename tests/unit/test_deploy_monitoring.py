"""deploy/ monitoring assets: Prometheus rules pass promtool, the Grafana dashboard is well formed, and every
`serving_*` name in the rules, their tests, the dashboard and docs/metrics.md is one that ServingMetrics
exports (with the sample suffix its type has: `_total` counters, `_bucket/_count/_sum` histograms).

promtool comes from the `prometheus` Debian package (`apt-get install -y prometheus`). Without it these
tests skip, except in CI (env CI set), where a missing promtool fails them.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from serving.rollout.metrics import RolloutMetrics
from serving.telemetry.gpu import GpuReading
from serving.telemetry.metrics import ServingMetrics
from serving.telemetry.runtime import RuntimeCollector

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
RULE_TESTS = sorted((ROOT / "deploy" / "prometheus" / "tests").glob("*.yml"))
DASHBOARD = ROOT / "deploy" / "grafana" / "serving-dashboard.json"
DOCS = ROOT / "docs" / "metrics.md"
METRIC_NAME = re.compile(r"\bserving_[a-z0-9_]+")
ALERTS = {
    "ServingPredictionDrift",
    "ServingLatencyP99OverSLO",
    "ServingErrorRatioHigh",
    "ServingQueueSaturated",
    "ServingModelVersionFailed",
    "ServingRolloutRolledBack",
}
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


class FakeGpu:
    def read(self) -> list[GpuReading]:
        return [GpuReading(0, 1, 2, 0.5)]


def served_registry() -> CollectorRegistry:
    """What the server registers: ServingMetrics (GPU collector included), the runtime gauges and the
    rollout's series."""
    registry = CollectorRegistry()
    ServingMetrics(registry, gpu_probe=FakeGpu(), process_metrics=False)
    RolloutMetrics(registry)
    loop = asyncio.new_event_loop()
    registry.register(RuntimeCollector(loop))
    loop.close()
    return registry


def exported_names() -> set[str]:
    """Every sample name a scrape can show."""
    return {
        family.name + suffix for family in served_registry().collect() for suffix in SUFFIXES[family.type]
    }


def documented_names() -> set[str]:
    """How docs/metrics.md names each metric: counters with `_total`, histograms and gauges bare."""
    return {
        family.name + ("_total" if family.type == "counter" else "") for family in served_registry().collect()
    }


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing in CI: apt-get install -y prometheus")
        pytest.skip("promtool not installed (apt-get install -y prometheus)")
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_queries(board: dict[str, Any]) -> list[str]:
    exprs = [target["expr"] for panel in panels(board) for target in panel.get("targets", [])]
    variables = [v["definition"] for v in board["templating"]["list"] if v["type"] == "query"]
    return exprs + variables


def names_in(texts: Iterable[str]) -> set[str]:
    return {name for text in texts for name in METRIC_NAME.findall(text)}


# ---------------------------------------------------------------- promtool


def test_promtool_check_rules() -> None:
    result = run(promtool(), "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_promtool_test_rules() -> None:
    assert RULE_TESTS, "no rule tests under deploy/prometheus/tests/"
    result = run(promtool(), "test", "rules", *map(str, RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_rule_test() -> None:
    rules = RULES.read_text()
    tests = "".join(path.read_text() for path in RULE_TESTS)
    for alert in ALERTS:
        assert f"alert: {alert}\n" in rules
        assert f"alertname: {alert}\n" in tests


def test_dashboard_expressions_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses each dashboard query, as a recording rule, with Grafana's variables filled in."""
    exprs = [target for target in dashboard_queries(dashboard()) if not target.startswith("label_values(")]
    substitutions = {"$__rate_interval": "5m", "$job": ".*", "$model": ".*", "$version": ".*"}
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    for index, expr in enumerate(exprs):
        for variable, value in substitutions.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"unknown Grafana variable in {expr}"
        lines += [f"      - record: dashboard:query_{index}", f"        expr: {json.dumps(expr)}"]
    rules = tmp_path / "dashboard_rules.yml"
    rules.write_text("\n".join(lines) + "\n")
    result = run(promtool(), "check", "rules", str(rules))
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------- the dashboard


def test_dashboard_structure() -> None:
    board = dashboard()
    assert board["uid"] and board["title"] and isinstance(board["schemaVersion"], int)
    ids = [panel["id"] for panel in panels(board)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {v["name"] for v in board["templating"]["list"]}
    assert {"datasource", "job", "model", "version"} <= variables
    for panel in panels(board):
        grid = panel["gridPos"]
        assert set(grid) == {"h", "w", "x", "y"} and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        assert all(target["expr"].strip() for target in panel["targets"]), panel["title"]


def test_dashboard_covers_the_required_views() -> None:
    titles = " | ".join(panel["title"].lower() for panel in panels(dashboard()))
    for needed in ("throughput", "errors", "latency by stage p50", "latency by stage p99", "batch size",
                   "queue depth", "configured vs served", "drift scores"):  # fmt: skip
        assert needed in titles, needed


# ---------------------------------------------------------------- metric names against serving/telemetry/metrics.py


def test_dashboard_uses_only_exported_metrics() -> None:
    used = names_in(dashboard_queries(dashboard()))
    assert used, "the dashboard references no serving_* metric"
    assert used - exported_names() == set()


def test_rules_and_rule_tests_use_only_exported_metrics() -> None:
    used = names_in(path.read_text() for path in [RULES, *RULE_TESTS])
    assert used - exported_names() == set()


def test_docs_list_every_metric_and_nothing_else() -> None:
    mentioned = names_in([DOCS.read_text()])
    assert documented_names() - mentioned == set(), "undocumented metrics"
    assert mentioned - exported_names() - documented_names() == set(), "docs mention unknown metrics"


def test_name_check_rejects_a_wrong_suffix() -> None:
    """The check is strict: a counter needs `_total`, a gauge takes no suffix."""
    exported = exported_names()
    assert "serving_requests_total" in exported and "serving_requests" not in exported
    assert "serving_queue_depth" in exported and "serving_queue_depth_total" not in exported
    assert "serving_request_duration_seconds_bucket" in exported
