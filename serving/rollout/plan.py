"""What an operator asks of a rollout (`RolloutPlan`, its `Gate`s) and where one stands (`RolloutState`).

Pure data, validated on construction, with a plain JSON form: the state is persisted inside the model's
traffic policy (serving/traffic/policy.py, field `rollout`), so it is written atomically with the weights
it implies and a restart resumes it at the same step. Nothing here imports the traffic package.

Gates (`--gate "errors<=+0.5pp,p99<=1.25x,agreement>=0.95,drift<=0.2"`):
    errors<=+Xpp     candidate error rate minus baseline error rate at most X percentage points
    pNN<=Rx          candidate NN-th latency percentile at most R times the baseline's (p50, p90, p99, …)
    agreement>=A     mean shadow agreement (argmax / exact match) at least A, judged in the shadow phase
    drift<=D         PSI between the two versions' prediction distributions at most D
Phases: shadow (optional) → canary (one step per percentage) → promoted | rolled_back; paused holds any
of the first two. A step of 100 is the promotion itself: the judge needs baseline traffic to compare.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from serving.errors import InvalidInput

SHADOW, CANARY, PAUSED, PROMOTED, ROLLED_BACK, IDLE = (
    "shadow",
    "canary",
    "paused",
    "promoted",
    "rolled_back",
    "idle",
)
PHASES = (IDLE, SHADOW, CANARY, PAUSED, PROMOTED, ROLLED_BACK)
ACTIVE_PHASES = (SHADOW, CANARY, PAUSED)
DEFAULT_STEPS = (1.0, 5.0, 25.0, 50.0, 100.0)
DEFAULT_GATES = "errors<=+0.5pp,p99<=1.25x,agreement>=0.95,drift<=0.2"
DEFAULT_STEP_TIME_S = 60.0
DEFAULT_MIN_REQUESTS = 500
DEFAULT_SHADOW_FRACTION = 0.5
DEFAULT_ROLLBACK_WINDOW_S = 600.0
MIN_STEP_TIME_S = 0.5

_GATE = re.compile(
    r"^\s*(?:(errors)\s*<=\s*\+?([0-9.]+)\s*pp|p([0-9]{1,3}(?:\.[0-9]+)?)\s*<=\s*([0-9.]+)\s*x"
    r"|(agreement)\s*>=\s*([0-9.]+)|(drift)\s*<=\s*([0-9.]+))\s*$"
)


class RolloutError(InvalidInput):
    """A rollout request or a persisted rollout is invalid; the message names the field."""


@dataclass(frozen=True)
class Gate:
    """One gate: `name` (errors, p99, agreement, drift), the comparison and its threshold.

    errors: threshold is a difference of proportions (0.005 for +0.5pp); pNN: a ratio, `quantile` NN/100;
    agreement: a lower bound (`op` ">="); drift: a PSI upper bound."""

    name: str
    threshold: float
    op: str = "<="
    quantile: float = 0.0

    @property
    def kind(self) -> str:
        return "latency" if self.name.startswith("p") and self.quantile > 0 else self.name

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "op": self.op, "threshold": self.threshold, "quantile": self.quantile}

    @classmethod
    def from_dict(cls, data: object) -> Gate:
        if not isinstance(data, Mapping):
            raise RolloutError(f"rollout.plan.gates: {data!r} is not an object")
        gate = parse_gate(
            cls(
                str(data["name"]), float(data["threshold"]), str(data["op"]), float(data.get("quantile", 0.0))
            ).text()
        )
        return cls(gate.name, float(data["threshold"]), gate.op, gate.quantile)

    def text(self) -> str:
        if self.name == "errors":
            return f"errors<=+{100 * self.threshold:g}pp"
        if self.kind == "latency":
            return f"{self.name}<={self.threshold:g}x"
        return f"{self.name}{self.op}{self.threshold:g}"


def parse_gate(text: str) -> Gate:
    match = _GATE.match(text)
    if match is None:
        raise RolloutError(
            f"gate: {text.strip()!r} is not one of errors<=+Xpp, pNN<=Rx, agreement>=A, drift<=D"
        )
    groups = match.groups()
    if groups[0]:
        return Gate("errors", _bounded("errors", groups[1], 0.0, 100.0) / 100.0)
    if groups[2]:
        percentile = _bounded("latency percentile", groups[2], 0.0, 100.0)
        if not 0.0 < percentile < 100.0:
            raise RolloutError(f"gate: percentile p{groups[2]} must be in (0, 100)")
        ratio = _bounded(f"p{groups[2]}", groups[3], 0.0, math.inf)
        if ratio <= 0.0:
            raise RolloutError(f"gate: p{groups[2]}: the ratio must be > 0")
        return Gate(f"p{groups[2]}", ratio, "<=", percentile / 100.0)
    if groups[4]:
        return Gate("agreement", _bounded("agreement", groups[5], 0.0, 1.0), ">=")
    return Gate("drift", _bounded("drift", groups[7], 0.0, math.inf))


def parse_gates(text: str) -> tuple[Gate, ...]:
    """`errors<=+0.5pp,p99<=1.25x,...`; each gate at most once; at least one gate."""
    gates = tuple(parse_gate(part) for part in text.split(",") if part.strip())
    if not gates:
        raise RolloutError("gate: give at least one gate, e.g. errors<=+0.5pp")
    names = [g.name for g in gates]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise RolloutError(f"gate: {', '.join(twice)} given more than once")
    return gates


def _bounded(where: str, text: str, low: float, high: float) -> float:
    try:
        value = float(text)
    except ValueError:
        raise RolloutError(f"gate: {where}: {text!r} is not a number") from None
    if not (math.isfinite(value) and low <= value <= high):
        raise RolloutError(f"gate: {where}: {text} is outside [{low:g}, {high:g}]")
    return value


def parse_steps(text: str) -> tuple[float, ...]:
    """`1,5,25,50,100`: increasing percentages in (0, 100]; 100 (the promotion) is added when missing."""
    try:
        steps = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise RolloutError(f"steps: {text!r} is not a comma-separated list of percentages") from None
    return check_steps(steps)


def check_steps(steps: Sequence[float]) -> tuple[float, ...]:
    if not steps:
        raise RolloutError("steps: give at least one percentage, e.g. 1,5,25,50,100")
    for step in steps:
        if not (math.isfinite(step) and 0.0 < step <= 100.0):
            raise RolloutError(f"steps: {step:g} is not a percentage in (0, 100]")
    if any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
        raise RolloutError(f"steps: {','.join(f'{s:g}' for s in steps)} must increase")
    return (*steps, 100.0) if steps[-1] != 100.0 else tuple(steps)


def parse_duration(text: str, where: str) -> float:
    """`90`, `90s`, `2m`, `1h`, `500ms` → seconds (> 0)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h)?\s*", text)
    if match is None:
        raise RolloutError(f"{where}: {text!r} is not a duration such as 2s, 90s, 2m or 1h")
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[match.group(2) or "s"]
    seconds = float(match.group(1)) * scale
    if seconds <= 0:
        raise RolloutError(f"{where}: must be > 0, got {text!r}")
    return seconds


@dataclass(frozen=True)
class RolloutPlan:
    """What the operator asked for; validated on construction."""

    candidate: int
    steps: tuple[float, ...] = DEFAULT_STEPS
    step_time_s: float = DEFAULT_STEP_TIME_S
    gates: tuple[Gate, ...] = field(default_factory=lambda: parse_gates(DEFAULT_GATES))
    min_requests: int = DEFAULT_MIN_REQUESTS
    shadow_s: float = 0.0  # 0: no shadow phase
    shadow_fraction: float = DEFAULT_SHADOW_FRACTION
    sticky: bool = False
    rollback_window_s: float = DEFAULT_ROLLBACK_WINDOW_S

    def __post_init__(self) -> None:
        if isinstance(self.candidate, bool) or not isinstance(self.candidate, int) or self.candidate <= 0:
            raise RolloutError(f"to: version {self.candidate!r} is not a positive integer")
        object.__setattr__(self, "steps", check_steps(list(self.steps)))
        if not (math.isfinite(self.step_time_s) and self.step_time_s >= MIN_STEP_TIME_S):
            raise RolloutError(f"step_time: must be >= {MIN_STEP_TIME_S}s, got {self.step_time_s!r}")
        if isinstance(self.min_requests, bool) or not isinstance(self.min_requests, int):
            raise RolloutError(f"min_requests: {self.min_requests!r} is not an integer")
        if self.min_requests < 1:
            raise RolloutError(f"min_requests: must be >= 1, got {self.min_requests}")
        if not (math.isfinite(self.shadow_s) and self.shadow_s >= 0.0):
            raise RolloutError(f"shadow: must be a duration >= 0, got {self.shadow_s!r}")
        if not 0.0 < self.shadow_fraction <= 1.0:
            raise RolloutError(f"shadow_fraction: must be in (0, 1], got {self.shadow_fraction!r}")
        if not (math.isfinite(self.rollback_window_s) and self.rollback_window_s >= 0.0):
            raise RolloutError(f"rollback_window: must be >= 0, got {self.rollback_window_s!r}")
        if not self.gates:
            raise RolloutError("gate: give at least one gate")

    def gate_text(self) -> str:
        return ",".join(g.text() for g in self.gates)

    def to_dict(self) -> dict[str, Any]:
        return {
            "candidate": self.candidate,
            "steps": [_plain(s) for s in self.steps],
            "step_time_s": self.step_time_s,
            "gates": [g.to_dict() for g in self.gates],
            "min_requests": self.min_requests,
            "shadow_s": self.shadow_s,
            "shadow_fraction": self.shadow_fraction,
            "sticky": self.sticky,
            "rollback_window_s": self.rollback_window_s,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RolloutPlan:
        try:
            return cls(
                candidate=data["candidate"],
                steps=tuple(float(s) for s in data["steps"]),
                step_time_s=float(data["step_time_s"]),
                gates=_gates_from(data["gates"]),
                min_requests=data["min_requests"],
                shadow_s=float(data.get("shadow_s", 0.0)),
                shadow_fraction=float(data.get("shadow_fraction", DEFAULT_SHADOW_FRACTION)),
                sticky=bool(data.get("sticky", False)),
                rollback_window_s=float(data.get("rollback_window_s", DEFAULT_ROLLBACK_WINDOW_S)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise RolloutError(f"rollout.plan: missing or invalid field: {exc}") from None


@dataclass(frozen=True)
class RolloutState:
    """Where a rollout stands; persisted in the traffic policy. `step` indexes plan.steps (-1: shadow)."""

    plan: RolloutPlan
    baseline: int
    phase: str
    step: int = -1
    paused_phase: str = ""  # the phase a pause holds (shadow or canary)
    reason: str = ""
    failed_gate: str = ""
    updated: str = ""  # ISO-8601 UTC of the last transition

    def __post_init__(self) -> None:
        if self.phase not in PHASES or self.phase == IDLE:
            raise RolloutError(f"rollout.phase: {self.phase!r} is not one of {', '.join(PHASES[1:])}")
        if self.baseline <= 0 or self.baseline == self.plan.candidate:
            raise RolloutError(f"rollout.baseline: {self.baseline} cannot be the baseline")
        if not -1 <= self.step < len(self.plan.steps):
            raise RolloutError(
                f"rollout.step: {self.step} is outside the plan's {len(self.plan.steps)} steps"
            )

    @property
    def candidate(self) -> int:
        return self.plan.candidate

    @property
    def active(self) -> bool:
        return self.phase in ACTIVE_PHASES

    @property
    def judged_phase(self) -> str:
        """shadow or canary: what runs now (a paused rollout: what it holds)."""
        return self.paused_phase if self.phase == PAUSED else self.phase

    def candidate_percent(self) -> float:
        if self.phase == PROMOTED:
            return 100.0
        if self.phase == ROLLED_BACK or self.step < 0:
            return 0.0
        return self.plan.steps[self.step]

    def weights(self) -> dict[int, float]:
        """The traffic weights this state implies."""
        percent = self.candidate_percent()
        if percent >= 100.0:
            return {self.candidate: 100.0, self.baseline: 0.0}
        if percent <= 0.0:
            return {self.baseline: 100.0}
        return {self.baseline: 100.0 - percent, self.candidate: percent}

    def moved(self, **changes: Any) -> RolloutState:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "plan": self.plan.to_dict(),
            "baseline": self.baseline,
            "phase": self.phase,
            "step": self.step,
            "paused_phase": self.paused_phase,
            "reason": self.reason,
            "failed_gate": self.failed_gate,
            "updated": self.updated,
        }

    @classmethod
    def from_dict(cls, data: object) -> RolloutState:
        if not isinstance(data, Mapping) or not isinstance(data.get("plan"), Mapping):
            raise RolloutError("rollout: must be an object with a plan")
        try:
            return cls(
                plan=RolloutPlan.from_dict(data["plan"]),
                baseline=int(data["baseline"]),
                phase=str(data["phase"]),
                step=int(data.get("step", -1)),
                paused_phase=str(data.get("paused_phase", "")),
                reason=str(data.get("reason", "")),
                failed_gate=str(data.get("failed_gate", "")),
                updated=str(data.get("updated", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise RolloutError(f"rollout: missing or invalid field: {exc}") from None


def _gates_from(data: object) -> tuple[Gate, ...]:
    if isinstance(data, str):
        return parse_gates(data)
    if not isinstance(data, list) or not data:
        raise RolloutError("rollout.plan.gates: must be a non-empty list")
    return tuple(Gate.from_dict(item) for item in data)


def _plain(number: float) -> int | float:
    return int(number) if float(number).is_integer() else number
