"""Capacity at SLO: step the load (concurrency or rate) up until the SLO breaks.

Levels: a list ``1,2,4,8`` or a progression ``START:STOP:xFACTOR`` (geometric) or
``START:STOP:+STEP`` (arithmetic). Each step is a full run (warm-up, then measurement) of one
target; the sweep stops at the first step whose SLO fails. Capacity is the highest level that held
the SLO, with the throughput it achieved; none when even the first level failed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from html import escape
from typing import Any

from loadtests.plan import PlanError, PreparedTarget, RunPlan
from loadtests.report import cards, page, percentile_chart, table, verdict_box
from loadtests.results import SCHEMA, RunResult
from loadtests.runner import Progress, execute
from loadtests.slo import Slo, SloVerdict
from loadtests.svg import PALETTE, Axes, Series, line_chart

_PROGRESSION = re.compile(r"^(\d+(?:\.\d+)?):(\d+(?:\.\d+)?):([x+])(\d+(?:\.\d+)?)$")
MAX_STEPS = 50


def parse_levels(text: str, integer: bool) -> list[float]:
    """'1,2,4,8' or '1:64:x2' or '100:1000:+100' → ascending levels (integers for concurrency)."""
    match = _PROGRESSION.match(text.strip())
    if match:
        start, stop, op, step = (
            float(match.group(1)),
            float(match.group(2)),
            match.group(3),
            float(match.group(4)),
        )
        if start <= 0 or stop < start or (op == "x" and step <= 1) or (op == "+" and step <= 0):
            raise PlanError(f"bad levels {text!r}: need 0 < START <= STOP and a step > 0 (or a factor > 1)")
        levels: list[float] = []
        level = start
        while level <= stop + 1e-9 and len(levels) < MAX_STEPS:
            levels.append(level)
            level = level * step if op == "x" else level + step
    else:
        try:
            levels = [float(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise PlanError(
                f"bad levels {text!r}: expected 1,2,4,8 or START:STOP:xFACTOR or START:STOP:+STEP"
            ) from None
    if integer:
        levels = sorted({float(max(1, round(level))) for level in levels})
    if not levels or min(levels) <= 0 or levels != sorted(levels):
        raise PlanError(f"bad levels {text!r}: need ascending values > 0")
    return levels


@dataclass(frozen=True)
class SweepStep:
    level: float
    result: RunResult
    verdict: SloVerdict


@dataclass(frozen=True)
class SweepResult:
    mode: str  # "concurrency" | "rate"
    slo: Slo
    steps: tuple[SweepStep, ...]

    @property
    def capacity(self) -> SweepStep | None:
        held = None
        for step in self.steps:
            if not step.verdict.passed:
                break
            held = step
        return held

    def line(self) -> str:
        capacity = self.capacity
        if capacity is None:
            first = self.steps[0]
            return (
                f"FAIL: the SLO broke at the first level ({self.mode} {first.level:g}): "
                + first.verdict.line()
            )
        target = capacity.result.targets[0]
        broke = next((s for s in self.steps if not s.verdict.passed), None)
        tail = f"; broke at {broke.level:g}" if broke else "; never broke (raise the top level)"
        return (
            f"PASS capacity at SLO {self.slo.text}: {self.mode} {capacity.level:g} → "
            f"{target.observed().throughput:,.1f}/s{tail}"
        )

    def to_json(self) -> dict[str, Any]:
        capacity = self.capacity
        return {
            "schema": SCHEMA,
            "kind": "sweep",
            "mode": self.mode,
            "slo": self.slo.text,
            "steps": [
                {
                    "level": s.level,
                    "passed": s.verdict.passed,
                    "line": s.verdict.line(),
                    "run": s.result.to_json(),
                }
                for s in self.steps
            ],
            "capacity": None
            if capacity is None
            else {"level": capacity.level, "throughput": capacity.result.targets[0].observed().throughput},
            "verdict": {"passed": capacity is not None, "line": self.line()},
        }


async def sweep(
    plan: RunPlan,
    levels: Sequence[float],
    slo: Slo,
    progress: Callable[[float], Progress | None] = lambda _: None,
) -> SweepResult:
    """Run ``plan``'s single target at each level until the SLO breaks."""
    if len(plan.targets) != 1:
        raise PlanError("a sweep drives exactly one target")
    base = plan.targets[0]
    steps: list[SweepStep] = []
    for level in levels:
        target = PreparedTarget(
            base.index, replace(base.spec, load=base.spec.load.at_level(level)), base.bodies
        )
        result = await execute(plan.with_targets([target]), progress=progress(level), slo=slo)
        verdict = slo.evaluate(result.targets[0].observed())
        steps.append(SweepStep(level, result, verdict))
        if not verdict.passed:
            break
    return SweepResult("concurrency" if base.spec.load.closed else "rate", slo, tuple(steps))


def render_sweep(document: dict[str, Any]) -> str:
    steps = document["steps"]
    targets = [s["run"]["targets"][0] for s in steps]
    xs = [s["level"] for s in steps]
    throughput = [(x, t["summary"]["throughput"]) for x, t in zip(xs, targets, strict=True)]
    latency = {
        k: [(x, t["summary"]["latency_ms"][k]) for x, t in zip(xs, targets, strict=True)]
        for k in ("p50", "p99")
    }
    mode = document["mode"]
    charts = line_chart(
        [Series("throughput", throughput, PALETTE[0])], Axes("Throughput by load", mode, "responses / s")
    ) + line_chart(
        [Series("p50", latency["p50"], PALETTE[0]), Series("p99", latency["p99"], PALETTE[1])],
        Axes("Latency by load", mode, "latency (ms)"),
    )
    rows = [
        [
            f"{s['level']:g}",
            "held" if s["passed"] else "broke",
            f"{t['summary']['throughput']:,.1f}/s",
            f"{t['summary']['latency_ms']['p50']}",
            f"{t['summary']['latency_ms']['p99']}",
            f"{t['summary']['requests'] - t['summary']['ok']}",
            s["line"],
        ]
        for s, t in zip(steps, targets, strict=True)
    ]
    capacity = document["capacity"]
    body = [
        f"<h1>Sweep: capacity at SLO {escape(document['slo'])}</h1>",
        verdict_box(document["verdict"]["passed"], document["verdict"]["line"], []),
        cards(
            [
                ("capacity", "-" if capacity is None else f"{mode} {capacity['level']:g}"),
                ("throughput at capacity", "-" if capacity is None else f"{capacity['throughput']:,.1f}/s"),
            ]
        ),
        f'<div class="grid">{charts}</div>',
        percentile_chart(
            [(f"{mode} {s['level']:g}", t["histogram"]) for s, t in zip(steps, targets, strict=True)],
            "Latency by percentile, per step",
        ),
        "<h2>Steps</h2>",
        table([mode, "SLO", "throughput", "p50 ms", "p99 ms", "errors", "verdict"], rows),
    ]
    return page("Sweep", body)
