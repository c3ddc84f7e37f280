"""A finished run: targets, actions, the generator's own cost, the verdict; and its JSON form.

JSON (``schema: "loadtests/1"``) is the contract for saved baselines and for other tools; its
fields are described in docs/loadtests.md. Latencies in summaries are milliseconds; the full
histogram (nanoseconds, HDR layout) is included so a later tool can recompute any percentile.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtests.actions import ActionRecord
from loadtests.plan import Timing
from loadtests.slo import Slo, SloVerdict
from loadtests.timeline import TargetResult, latency_summary, ms, window_summary

SCHEMA = "loadtests/1"
ACTION_WINDOW_S = 5.0


@dataclass(frozen=True)
class GeneratorCost:
    workers: int
    connections: int
    cpu_s: float
    wall_s: float

    def per_request_us(self, requests: int) -> float | None:
        return round(self.cpu_s / requests * 1e6, 2) if requests else None

    def to_dict(self, requests: int) -> dict[str, Any]:
        busy = self.cpu_s / (self.wall_s * self.workers) if self.wall_s > 0 else 0.0
        return {
            "workers": self.workers,
            "connections": self.connections,
            "cpu_s": round(self.cpu_s, 3),
            "cpu_us_per_request": self.per_request_us(requests),
            "busy": round(busy, 3),
        }


@dataclass(frozen=True)
class Verdict:
    passed: bool
    lines: tuple[str, ...]

    @property
    def line(self) -> str:
        return " | ".join(self.lines)


@dataclass
class RunResult:
    url: str
    timing: Timing
    targets: list[TargetResult]
    generator: GeneratorCost
    actions: list[ActionRecord] = field(default_factory=list)
    slo: Slo | None = None  # applies to every target that has no SLO of its own
    started_at: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    window_s: float = ACTION_WINDOW_S

    def slo_verdicts(self) -> list[tuple[TargetResult, SloVerdict]]:
        verdicts = []
        for target in self.targets:
            slo = target.spec.slo or self.slo
            if slo is not None:
                verdicts.append((target, slo.evaluate(target.observed())))
        return verdicts

    def verdict(self) -> Verdict:
        """Every SLO held, every expected split matched, every action succeeded."""
        passed, lines = True, []
        for target, verdict in self.slo_verdicts():
            passed &= verdict.passed
            lines.append(verdict.line(target.spec.label))
        for target in self.targets:
            check = target.split_check()
            if check is not None:
                passed &= bool(check["matches"])
                lines.append(f"{'PASS' if check['matches'] else 'FAIL'} {target.spec.label}: {check['line']}")
        failed_actions = [a for a in self.actions if not a.ok]
        if failed_actions:
            passed = False
            lines.append(
                f"FAIL action at {failed_actions[0].at_s:g}s: "
                f"{failed_actions[0].description}: {failed_actions[0].detail}"
            )
        if not lines:
            lines.append("DONE (no SLO given): " + "; ".join(short_summary(t) for t in self.targets))
        return Verdict(passed, tuple(lines))

    def requests(self) -> int:
        return sum(t.total().requests for t in self.targets)

    def action_windows(self, action: ActionRecord) -> list[dict[str, Any]]:
        windows = []
        for target in self.targets:
            before = target.window(action.started_s - self.window_s, action.started_s)
            after = target.window(action.started_s, action.started_s + self.window_s)
            windows.append(
                {
                    "target": target.spec.label,
                    "before": window_summary(before),
                    "after": window_summary(after),
                }
            )
        return windows

    def to_json(self) -> dict[str, Any]:
        verdict = self.verdict()
        return {
            "schema": SCHEMA,
            "kind": "run",
            "url": self.url,
            "started_at": self.started_at,
            "timing": {
                "duration_s": self.timing.duration_s,
                "warmup_s": self.timing.warmup_s,
                "interval_s": self.timing.interval_s,
            },
            "generator": self.generator.to_dict(self.requests()),
            "slo": self.slo.text if self.slo else None,
            "targets": [self._target_json(t) for t in self.targets],
            "actions": [
                {**a.to_dict(), "window_s": self.window_s, "windows": self.action_windows(a)}
                for a in self.actions
            ],
            "verdict": {"passed": verdict.passed, "line": verdict.line, "lines": list(verdict.lines)},
        }

    def _target_json(self, target: TargetResult) -> dict[str, Any]:
        total = target.total()
        counts, moved = target.key_counts()
        slo = next((v for t, v in self.slo_verdicts() if t is target), None)
        lag = target.totals.lag
        return {
            "name": target.spec.label,
            "spec": target.spec.describe(),
            "summary": {
                "requests": total.requests,
                "ok": total.ok,
                "errors": dict(sorted(total.errors.items())),
                "error_rate": total.failed / total.requests if total.requests else None,
                "span_s": round(target.span_s, 4),
                "throughput": total.ok / target.span_s,
                "inferences_per_s": total.ok * target.spec.batch / target.span_s,
                "latency_ms": latency_summary(total.latency),
                "generator_lag_ms": {
                    "p50": ms(lag.percentile(50)),
                    "p99": ms(lag.percentile(99)),
                    "max": ms(float(lag.max)),
                }
                if lag.count
                else None,
            },
            "versions": [s.to_dict() for s in target.version_shares(total)],
            "keys": {
                "distinct": len(target.totals.key_versions),
                "moved": moved,
                "per_version": dict(sorted(counts.items())),
                "shares": [s.to_dict() for s in target.key_shares()],
            }
            if target.spec.keys
            else None,
            "split_check": target.split_check(total),
            "slo": {
                "text": slo_text(target, self.slo),
                "passed": slo.passed,
                "line": slo.line(target.spec.label),
            }
            if slo
            else None,
            "histogram": total.latency.to_dict(),
            "intervals": target.series(),
        }


def slo_text(target: TargetResult, default: Slo | None) -> str | None:
    slo = target.spec.slo or default
    return slo.text if slo else None


def short_summary(target: TargetResult) -> str:
    total = target.total()
    lat = latency_summary(total.latency)
    return (
        f"{target.spec.label} {total.ok / target.span_s:,.0f}/s p50 {lat['p50']}ms p99 {lat['p99']}ms "
        f"errors {total.failed}/{total.requests}"
    )


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.write_text(json.dumps(document, indent=1, allow_nan=False, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if isinstance(value, set | frozenset | tuple):
        return sorted(value) if isinstance(value, set | frozenset) else list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def read_json(path: Path) -> dict[str, Any]:
    document = json.loads(path.read_text())
    if not isinstance(document, dict) or document.get("schema") != SCHEMA:
        raise ValueError(f"{path} is not a loadtests result (schema {SCHEMA})")
    return document
