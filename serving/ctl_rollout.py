"""`serving ctl rollout`: start a progressive rollout, read its status, pause, resume or abort it.

    serving ctl rollout MODEL --to V [--shadow DUR] [--shadow-fraction F] [--steps 1,5,25,50,100]
        [--step-time 60s] [--gate "errors<=+0.5pp,p99<=1.25x,agreement>=0.95,drift<=0.2"]
        [--min-requests N] [--sticky] [--rollback-window DUR]
    serving ctl rollout MODEL --status [--json]
    serving ctl rollout MODEL --pause | --resume | --abort

Each is one RPC (StartRollout, GetRollout, ControlRollout); the rollout itself runs in the server.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any, Protocol

from serving.api.admin_codec import rollout_json
from serving.proto import admin_pb2 as apb
from serving.rollout.plan import (
    DEFAULT_GATES,
    DEFAULT_MIN_REQUESTS,
    RolloutError,
    parse_duration,
    parse_gates,
    parse_steps,
)


class RolloutClient(Protocol):
    admin: Any

    def call(self, method: Any, request: Any, timeout_s: float | None = None) -> Any: ...


class RolloutUsageError(Exception):
    """A rollout command line that cannot be sent (serving ctl maps it to exit status 2)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--to", type=int, metavar="VERSION", help="start a rollout to this candidate version")
    action.add_argument("--status", action="store_true", help="phase, step, gates, time to the next decision")
    action.add_argument("--pause", action="store_true", help="hold the current step; nothing is judged")
    action.add_argument("--resume", action="store_true", help="continue a paused rollout")
    action.add_argument("--abort", action="store_true", help="back to the baseline (also after promotion)")
    parser.add_argument("--shadow", metavar="DUR", help="a shadow phase first, e.g. 2m (default: none)")
    parser.add_argument(
        "--shadow-fraction", type=float, default=0.0, help="copied in the shadow phase (0: default 0.5)"
    )
    parser.add_argument(
        "--steps", default="1,5,25,50,100", help="candidate percentages (default %(default)s)"
    )
    parser.add_argument("--step-time", default="60s", metavar="DUR", help="least time per step (%(default)s)")
    parser.add_argument("--gate", default=DEFAULT_GATES, help="gates (default %(default)s)")
    parser.add_argument(
        "--min-requests",
        type=int,
        default=DEFAULT_MIN_REQUESTS,
        help="per side before a verdict (%(default)s)",
    )
    parser.add_argument("--sticky", action="store_true", help="routing keys stick to one version")
    parser.add_argument("--rollback-window", metavar="DUR", help="after promotion, --abort still rolls back")
    parser.add_argument("--json", action="store_true", help="print the status as JSON")


def run(client: RolloutClient, args: argparse.Namespace) -> str:
    model = args.model
    if args.to is not None:
        reply = client.call(client.admin.StartRollout, start_request(args))
    elif args.pause or args.resume or args.abort:
        verb = "pause" if args.pause else "resume" if args.resume else "abort"
        reply = client.call(client.admin.ControlRollout, apb.ControlRolloutRequest(model=model, action=verb))
    else:
        reply = client.call(client.admin.GetRollout, apb.ModelRef(model=model))
    return json.dumps(rollout_json(reply), indent=2) if args.json else status_text(reply)


def start_request(args: argparse.Namespace) -> apb.StartRolloutRequest:
    """The StartRollout request of the command line; RolloutUsageError names the bad flag."""
    try:
        steps = parse_steps(args.steps)
        step_time = parse_duration(args.step_time, "--step-time")
        parse_gates(args.gate)
        shadow = parse_duration(args.shadow, "--shadow") if args.shadow else 0.0
        window = parse_duration(args.rollback_window, "--rollback-window") if args.rollback_window else -1.0
    except RolloutError as exc:
        raise RolloutUsageError(str(exc)) from None
    if args.to <= 0:
        raise RolloutUsageError(f"--to: {args.to} is not a positive version")
    if args.min_requests < 1:
        raise RolloutUsageError(f"--min-requests: must be >= 1, got {args.min_requests}")
    if not 0.0 <= args.shadow_fraction <= 1.0:
        raise RolloutUsageError(
            f"--shadow-fraction: must be in [0, 1] (0: the default), got {args.shadow_fraction}"
        )
    return apb.StartRolloutRequest(
        model=args.model,
        candidate=args.to,
        steps=list(steps),
        step_time_seconds=step_time,
        gates=args.gate,
        min_requests=args.min_requests,
        shadow_seconds=shadow,
        shadow_fraction=args.shadow_fraction,
        sticky=args.sticky,
        rollback_window_seconds=window,
    )


def status_text(reply: apb.RolloutStatus) -> str:
    if reply.phase == "idle":
        return f"{reply.model}: no rollout"
    percent = f"{reply.candidate_percent:g}%"
    lines = [
        f"{reply.model}: {reply.phase}"
        + (f" (holding {reply.paused_phase})" if reply.paused_phase else "")
        + f", v{reply.candidate} at {percent} against v{reply.baseline}"
        + (f", step {reply.step + 1}/{len(reply.steps)}" if reply.step >= 0 else ""),
    ]
    if not math.isnan(reply.next_decision_seconds):
        lines.append(
            f"step running {reply.step_elapsed_seconds:.1f}s, "
            f"next decision in {reply.next_decision_seconds:.1f}s"
        )
    if reply.rollback_window_left_seconds > 0:
        lines.append(f"rollback window: {reply.rollback_window_left_seconds:.0f}s left (--abort)")
    if reply.reason:
        lines.append(f"reason: {reply.reason}")
    if reply.failed_gate:
        lines.append(f"failed gate: {reply.failed_gate}")
    rows = [
        (
            g.gate,
            f"{g.op}{g.threshold:g}",
            _number(g.statistic),
            f"[{_number(g.lower)}, {_number(g.upper)}]",
            g.verdict,
            g.candidate_count,
            g.baseline_count,
            g.detail,
        )
        for g in reply.gates
    ]
    if rows:
        headers = ("GATE", "THRESHOLD", "STATISTIC", "INTERVAL", "VERDICT", "CANDIDATE", "BASELINE", "DETAIL")
        cells = [list(headers)] + [[str(c) for c in row] for row in rows]
        widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def _number(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.4g}"
