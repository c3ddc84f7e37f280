"""deploy/argo and deploy/flagger, validated offline: the rollout templates for Kubernetes-driven canaries.

- The AnalysisTemplate, MetricTemplates and Canary pass `check-jsonschema` against schemas made from the
  argo-rollouts and flagger CRDs (deploy/schemas/README.md), which reject unknown fields.
- Every argument and template variable a query uses is declared (Argo) or given by the Canary (Flagger).
- Every query, its placeholders filled in, is valid PromQL (promtool) over metrics the server exports.
- The queries compute what they claim: promtool evaluates them on series of canary and stable pods (an
  error rate 25 points up, a p99 twice the stable's; below the minimum of requests, NaN for Argo's
  Inconclusive and no value for Flagger's halt).
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.servers import ROOT
from tests.unit.test_deploy_monitoring import dashboard, exported_names, names_in, promtool, run

ARGO = ROOT / "deploy" / "argo" / "analysistemplate.yaml"
FLAGGER_TEMPLATES = ROOT / "deploy" / "flagger" / "metrictemplates.yaml"
FLAGGER_CANARY = ROOT / "deploy" / "flagger" / "canary.yaml"
SCHEMAS = {
    "AnalysisTemplate": "analysistemplate-argoproj.io-v1alpha1.json",
    "MetricTemplate": "metrictemplate-flagger.app-v1beta1.json",
    "Canary": "canary-flagger.app-v1beta1.json",
}
ARGS = re.compile(r"\{\{\s*args\.([\w-]+)\s*\}\}")
VARIABLES = re.compile(r"\{\{\s*variables\.(\w+)\s*\}\}")
Object = dict[str, Any]
# How the placeholders are filled in for the checks: canary pods serving-abc12-*, stable serving-def34-*.
ARGO_ARGS = {"namespace": "prod", "rollout": "serving", "model": "digits", "canary-hash": "abc12",
             "stable-hash": "def34", "prometheus": "http://prometheus:9090", "window": "5m"}  # fmt: skip
ARGO_STABLE, FLAGGER_PRIMARY = "serving-def34-q9z1m", "serving-primary-def34-q9z1m"
FLAGGER_VALUES = {"namespace": "prod", "target": "serving", "interval": "5m", "variables.model": "digits"}


def documents(path: Path) -> list[Object]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def argo() -> Object:
    (template,) = documents(ARGO)
    return template


def argo_queries(min_requests: str = "500") -> dict[str, str]:
    values = {**ARGO_ARGS, "min-requests": min_requests}
    return {m["name"]: ARGS.sub(lambda a: values[a.group(1)], m["provider"]["prometheus"]["query"])
            for m in argo()["spec"]["metrics"]}  # fmt: skip


def flagger_queries(min_requests: str = "500") -> dict[str, str]:
    values = {**FLAGGER_VALUES, "variables.minRequests": min_requests}
    fill = re.compile(r"\{\{\s*([\w.]+)\s*\}\}")
    return {t["metadata"]["name"]: fill.sub(lambda v: values[v.group(1)], t["spec"]["query"])
            for t in documents(FLAGGER_TEMPLATES)}  # fmt: skip


def check_schema(obj: Object, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    document = tmp_path / f"{obj['kind']}-{obj['metadata']['name']}.yaml"
    document.write_text(yaml.safe_dump(obj))
    schema = ROOT / "deploy" / "schemas" / SCHEMAS[obj["kind"]]
    command = [sys.executable, "-m", "check_jsonschema", "--schemafile", str(schema), str(document)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


# ---------------------------------------------------------------- schemas


@pytest.mark.parametrize("path", [ARGO, FLAGGER_TEMPLATES, FLAGGER_CANARY], ids=lambda p: p.name)
def test_objects_validate_against_their_crds(path: Path, tmp_path: Path) -> None:
    for obj in documents(path):
        result = check_schema(obj, tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr


def test_schema_check_rejects_a_misspelt_field(tmp_path: Path) -> None:
    template = argo()
    template["spec"]["metrics"][0]["sucessCondition"] = template["spec"]["metrics"][0].pop("successCondition")
    result = check_schema(template, tmp_path)
    assert result.returncode == 1 and "sucessCondition" in result.stdout, result.stdout
    canary = documents(FLAGGER_CANARY)[0]
    canary["spec"]["analysis"]["metrics"][0]["thresholdRange"]["maximum"] = 1
    result = check_schema(canary, tmp_path)
    assert result.returncode == 1 and "maximum" in result.stdout, result.stdout


# ---------------------------------------------------------------- what ties them together


def test_argo_queries_use_only_declared_args() -> None:
    template = argo()
    declared = {arg["name"] for arg in template["spec"]["args"]}
    used = set(ARGS.findall(ARGO.read_text().split("\nspec:", 1)[1]))
    assert used and used <= declared, used - declared
    assert set(ARGO_ARGS) | {"min-requests"} == declared


def test_canary_gives_every_template_its_variables() -> None:
    templates = {t["metadata"]["name"]: set(VARIABLES.findall(t["spec"]["query"]))
                 for t in documents(FLAGGER_TEMPLATES)}  # fmt: skip
    (canary,) = documents(FLAGGER_CANARY)
    metrics = canary["spec"]["analysis"]["metrics"]
    assert {m["templateRef"]["name"] for m in metrics} == set(templates)
    for metric in metrics:
        needed = templates[metric["templateRef"]["name"]]
        assert needed == set(metric.get("templateVariables", {})), metric["name"]
        assert "thresholdRange" in metric, metric["name"]


def test_queries_use_only_exported_metrics() -> None:
    queries = [*argo_queries().values(), *flagger_queries().values()]
    used = names_in(queries)
    assert "serving_rollout_decisions_total" in used and "serving_request_duration_seconds_bucket" in used
    assert used - exported_names() == set()


def test_queries_are_valid_promql(tmp_path: Path) -> None:
    queries = [*argo_queries().values(), *flagger_queries().values()]
    lines = ["groups:", "  - name: rollout_templates", "    rules:"]
    for index, query in enumerate(queries):
        assert "{{" not in query, query
        lines += [f"      - record: template:query_{index}", f"        expr: {json.dumps(query)}"]
    rules = tmp_path / "template_rules.yml"
    rules.write_text("\n".join(lines) + "\n")
    result = run(promtool(), "check", "rules", str(rules))
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------- what the queries compute


def pod_series(pod: str, ok_per_minute: int, errors_per_minute: int, bucket_le: str) -> list[Object]:
    """A pod's request counter (OK and INTERNAL) and latency histogram: every request in one bucket."""
    labels = f'namespace="prod",pod="{pod}",model="digits"'
    total = ok_per_minute + errors_per_minute
    series = [{"series": f'serving_requests_total{{{labels},code="OK"}}', "values": f"0+{ok_per_minute}x20"}]
    if errors_per_minute:
        series.append({"series": f'serving_requests_total{{{labels},code="INTERNAL"}}',
                       "values": f"0+{errors_per_minute}x20"})  # fmt: skip
    for le in ("0.005", "0.01", "0.02", "+Inf"):
        per_minute = total if float(le) >= float(bucket_le) else 0
        series.append({"series": f'serving_request_duration_seconds_bucket{{{labels},le="{le}"}}',
                       "values": f"0+{per_minute}x20"})  # fmt: skip
    series.append(
        {"series": f"serving_request_duration_seconds_count{{{labels}}}", "values": f"0+{total}x20"}
    )
    return series


def evaluate(tmp_path: Path, exprs: dict[str, str], stable: str) -> dict[str, list[float]]:
    """Each expression's value at 15 min over canary (1 in 4 fails, p99 in (10, 20] ms) and stable pods
    (no failures, p99 in (5, 10] ms), 400 requests a minute each. The test expects -1 on purpose, so that
    promtool fails and prints the value it got."""
    inputs = pod_series("serving-abc12-x7k2p", 300, 100, "0.02") + pod_series(stable, 400, 0, "0.01")
    # the canary's in-server judge rolled back at minute 11; only the stable pod's drift alert is up
    inputs.append({"series": 'serving_rollout_decisions_total{namespace="prod",pod="serving-abc12-x7k2p",'
                             'model="digits",decision="rollback"}', "values": "0x10 1x10"})  # fmt: skip
    inputs.append({"series": f'serving_drift_alert{{namespace="prod",pod="{stable}",model="digits",'
                             'output="probabilities"}', "values": "1x20"})  # fmt: skip
    got: dict[str, list[float]] = {}
    for name, expr in exprs.items():
        test = {"rule_files": [], "evaluation_interval": "1m", "tests": [{
            "interval": "1m", "input_series": inputs,
            "promql_expr_test": [{"expr": expr, "eval_time": "15m", "exp_samples": [{"labels": "{}", "value": -1}]}],
        }]}  # fmt: skip
        path = tmp_path / f"{name}.yml"
        path.write_text(yaml.safe_dump(test))
        result = run(promtool(), "test", "rules", str(path))
        assert result.returncode == 1, result.stdout
        match = re.search(
            r"^\s*got: (.*)$", result.stdout + result.stderr, re.M
        )  # "{} 2.5E-01", "{} NaN" or "nil"
        assert match, result.stdout + result.stderr
        got[name] = [float(value) for value in re.findall(r"\}\s+(\S+)", match.group(1))]
    return got


def test_argo_queries_compare_canary_with_stable(tmp_path: Path) -> None:
    (errors,), (p99,), drift, rollbacks = evaluate(tmp_path, argo_queries(), ARGO_STABLE).values()
    assert errors == pytest.approx(0.25) and p99 == pytest.approx(0.0199 / 0.00995)
    assert drift == [0.0], "the stable pods' drift alert counted against the canary"
    assert rollbacks[0] > 0, "the canary pod's in-server rollback was missed"
    starved = evaluate(
        tmp_path, {k: v for k, v in argo_queries("100000").items() if "-rat" in k}, ARGO_STABLE
    )
    assert [math.isnan(value) for values in starved.values() for value in values] == [True, True]


def test_flagger_queries_compare_canary_with_primary(tmp_path: Path) -> None:
    (errors,), (p99,), drift, rollbacks = evaluate(tmp_path, flagger_queries(), FLAGGER_PRIMARY).values()
    assert errors == pytest.approx(25.0) and p99 == pytest.approx(0.0199 / 0.00995)  # percentage points
    assert drift == [0.0] and rollbacks[0] > 0
    starved = evaluate(
        tmp_path, {k: v for k, v in flagger_queries("100000").items() if "-rat" in k}, FLAGGER_PRIMARY
    )
    assert starved == {"serving-error-rate-increase": [], "serving-p99-latency-ratio": []}


# ---------------------------------------------------------------- the dashboard's rollout row


def test_dashboard_has_a_rollout_row_over_every_rollout_series() -> None:
    """The row follows the others; test_deploy_monitoring checks its queries (PromQL, exported names)."""
    board = dashboard()
    titles = [panel["title"] for panel in board["panels"]]
    row = titles.index("Progressive rollout")
    assert board["panels"][row]["type"] == "row"
    inside = board["panels"][row + 1 :]
    assert all(panel["type"] != "row" for panel in inside), "the rollout row is the last one"
    used = names_in(target["expr"] for panel in inside for target in panel["targets"])
    series = {name for name in exported_names() if name.startswith("serving_rollout_")}
    assert used == series, series ^ used
    assert {"Rollout phase", "Rollout gate verdicts", "Rollout decisions"} <= {p["title"] for p in inside}
