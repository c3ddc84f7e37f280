"""End-to-end runs against the no-op server: the generator's own behaviour, no model server needed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadtests.actions import Action, ExecAction, RepositoryAction
from loadtests.keys import parse_keys
from loadtests.noop_server import NoopConfig
from loadtests.plan import LoadShape, RunPlan, TargetSpec, Timing, prepare
from loadtests.report import render_run
from loadtests.results import read_json, write_json
from loadtests.slo import parse_slo
from loadtests.sweep import render_sweep, sweep
from tests.loadtests.conftest import NoopFactory, run_once


async def test_closed_loop(noop: NoopFactory) -> None:
    url, servicer = await noop(NoopConfig())
    result = await run_once(
        url, [TargetSpec("noop", LoadShape(concurrency=4))], slo=parse_slo("p99<1s,errors<=0")
    )
    (target,) = result.targets
    total = target.total()
    assert total.requests > 100 and total.failed == 0 and total.versions == {"1": total.ok}
    assert target.observed().throughput == pytest.approx(total.ok / target.span_s)
    assert [row["t"] for row in target.series()] == [0.0, 0.5, 1.0]
    assert result.verdict().passed and result.generator.cpu_s > 0
    assert sum(servicer.served.values()) >= total.ok  # warm-up requests are served but not counted


async def test_open_loop_constant_rate_sends_exactly_the_schedule(noop: NoopFactory) -> None:
    url, _ = await noop(NoopConfig())
    result = await run_once(url, [TargetSpec("noop", LoadShape(rate=200))], duration_s=2.0)
    total = result.targets[0].total()
    assert total.requests == 400 and total.failed == 0
    assert result.targets[0].totals.lag.count == 400


async def test_open_loop_poisson_and_two_workers(noop: NoopFactory) -> None:
    url, _ = await noop(NoopConfig())
    specs = [TargetSpec("a", LoadShape(rate=150, poisson=True)), TargetSpec("b", LoadShape(concurrency=3))]
    result = await run_once(url, specs, duration_s=2.0, workers=2)
    poisson, closed = (t.total() for t in result.targets)
    assert 300 - 4 * 300**0.5 < poisson.requests < 300 + 4 * 300**0.5  # two Poisson streams of 75/s
    assert closed.requests > 100 and result.generator.workers == 2


async def test_a_stall_shows_in_open_loop_latency_but_hides_in_closed_loop(noop: NoopFactory) -> None:
    """No coordinated omission: latency counts from the intended send time."""
    config = NoopConfig(stall_at_s=0.6, stall_s=0.5)  # stalls ~0.3s into measurement
    url, _ = await noop(config)
    open_loop = (await run_once(url, [TargetSpec("noop", LoadShape(rate=200))], duration_s=1.5)).targets[0]
    hist = open_loop.total().latency
    assert hist.max >= 0.4e9  # the first request caught in the stall waited ~0.5s
    assert hist.percentile(90) >= 0.1e9  # ~100 requests were due during the stall, a third of the run
    assert open_loop.total().requests == 300

    url, _ = await noop(config)
    closed = (await run_once(url, [TargetSpec("noop", LoadShape(concurrency=2))], duration_s=1.5)).targets[0]
    assert closed.total().latency.max >= 0.4e9  # it saw the stall too, but only 2 requests did
    assert closed.total().latency.percentile(90) < 0.1e9


async def test_deadline_errors_are_counted_by_status_code(noop: NoopFactory) -> None:
    url, _ = await noop(NoopConfig(delay_s=0.2))
    spec = TargetSpec("noop", LoadShape(concurrency=2), timeout_s=0.05)
    result = await run_once(url, [spec], duration_s=1.0, slo=parse_slo("errors<1%"))
    total = result.targets[0].total()
    assert total.ok == 0 and set(total.errors) == {"DEADLINE_EXCEEDED"} and total.failed >= 20
    assert not result.verdict().passed and "errors 100% < 1% ✗" in result.verdict().line


async def test_sticky_split_matches_its_weights_over_keys(noop: NoopFactory) -> None:
    url, servicer = await noop(NoopConfig(versions={"1": 90, "2": 10}, sticky=True))
    keys = parse_keys("zipf:10000:1.1")
    good = TargetSpec(
        "noop", LoadShape(concurrency=8), keys=keys, expect_split={"1": 90, "2": 10}, name="good"
    )
    wrong = TargetSpec(
        "noop", LoadShape(concurrency=2), keys=keys, expect_split={"1": 50, "2": 50}, name="wrong"
    )
    result = await run_once(url, [good, wrong], duration_s=2.0)
    good_result, wrong_result = result.targets
    counts, moved = good_result.key_counts()
    assert moved == 0 and sum(counts.values()) > 500
    assert good_result.split_check()["matches"]  # type: ignore[index]
    assert not wrong_result.split_check()["matches"]  # type: ignore[index]
    assert not result.verdict().passed


async def test_pinned_version_and_unsticky_request_split(noop: NoopFactory) -> None:
    url, _ = await noop(NoopConfig(versions={"1": 50, "2": 50}))
    pinned = TargetSpec("noop", LoadShape(concurrency=2), version="2")
    routed = TargetSpec("noop", LoadShape(concurrency=4), expect_split={"1": 1, "2": 1}, name="routed")
    result = await run_once(url, [pinned, routed])
    assert set(result.targets[0].total().versions) == {"2"}
    assert result.targets[1].split_check()["basis"] == "requests"  # type: ignore[index]
    assert result.targets[1].split_check()["matches"]  # type: ignore[index]


async def test_actions_on_the_timeline(noop: NoopFactory, tmp_path: Path) -> None:
    url, servicer = await noop(NoopConfig())
    marker = tmp_path / "ran"
    actions: list[Action] = [
        RepositoryAction(0.3, "load", "noop", {"version": "3"}),
        ExecAction(0.6, f"touch {marker} && echo split done"),
        RepositoryAction(0.9, "unload", "noop"),
        ExecAction(1.2, "echo nope >&2; exit 3"),
    ]
    result = await run_once(
        url, [TargetSpec("noop", LoadShape(concurrency=2))], duration_s=1.5, actions=actions
    )
    assert servicer.repository_calls == [("load", "noop"), ("unload", "noop")] and marker.exists()
    assert [a.ok for a in result.actions] == [True, True, True, False]
    assert result.actions[1].detail == "exit 0: split done" and result.actions[3].detail == "exit 3: nope"
    assert all(0.0 <= a.started_s - a.at_s < 0.3 for a in result.actions)
    assert not result.verdict().passed and "FAIL action at 1.2s" in result.verdict().line
    document = result.to_json()
    window = document["actions"][0]["windows"][0]
    assert window["target"] == "noop" and window["after"]["requests"] > 0
    html = render_run(document)
    assert "Operator actions" in html and "exit 3: nope" in html


async def test_sweep_finds_capacity_and_stops_at_the_break(noop: NoopFactory) -> None:
    url, _ = await noop(NoopConfig(delay_s=0.01))
    targets = await prepare(url, [TargetSpec("noop", LoadShape(concurrency=1))], 0)
    plan = RunPlan(url, targets, Timing(0.6, 0.2, 0.3))
    # 10 ms per reply: concurrency c gives about 90*c replies/s, so 1 and 2 stay under 350/s and 8 does not
    result = await sweep(plan, [1, 2, 8, 16], parse_slo("throughput<=350/s,errors<=0"))
    assert [s.level for s in result.steps] == [1, 2, 8]
    assert [s.verdict.passed for s in result.steps] == [True, True, False]
    assert result.capacity is not None and result.capacity.level == 2
    assert result.line().startswith("PASS capacity at SLO throughput<=350/s,errors<=0: concurrency 2 → ")
    document = result.to_json()
    assert document["capacity"]["level"] == 2 and len(document["steps"]) == 3
    assert render_sweep(document).count("<svg") == 3

    first_breaks = await sweep(plan, [4, 8], parse_slo("p50<1us"))
    assert len(first_breaks.steps) == 1 and first_breaks.capacity is None
    assert first_breaks.line().startswith("FAIL: the SLO broke at the first level (concurrency 4)")


async def test_results_round_trip_through_json_and_html(noop: NoopFactory, tmp_path: Path) -> None:
    url, _ = await noop(NoopConfig(versions={"1": 1, "2": 1}, sticky=True))
    spec = TargetSpec(
        "noop", LoadShape(rate=100), keys=parse_keys("uniform:100"), expect_split={"1": 1, "2": 1}
    )
    result = await run_once(url, [spec], slo=parse_slo("p99<1s"))
    write_json(tmp_path / "r.json", result.to_json())
    document = read_json(tmp_path / "r.json")
    target = document["targets"][0]
    assert target["summary"]["requests"] == 150 and target["keys"]["distinct"] > 50
    assert document["verdict"]["passed"] is True and json.dumps(document)
    html = render_run(document)
    assert (
        html.count("<svg") >= 5
        and "<script" not in html
        and "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    )
