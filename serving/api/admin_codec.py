"""serving.admin protobuf ⇄ domain types (routing.TrafficPolicy, policy_store.HistoryEntry, …)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping

from serving.admin.operations import VersionInfo
from serving.proto import admin_pb2 as pb
from serving.rollout.plan import (
    DEFAULT_GATES,
    DEFAULT_MIN_REQUESTS,
    DEFAULT_ROLLBACK_WINDOW_S,
    DEFAULT_SHADOW_FRACTION,
    DEFAULT_STEP_TIME_S,
    DEFAULT_STEPS,
    RolloutPlan,
    parse_gates,
)
from serving.rollout.status import RolloutView
from serving.traffic.policy import PolicyError, TrafficPolicy
from serving.traffic.router import PolicyStatus
from serving.traffic.shadow import ShadowPairSnapshot
from serving.traffic.store import HistoryEntry


def encode_policy(policy: TrafficPolicy, into: pb.Policy) -> None:
    for version, weight in policy.weights.items():
        into.weights[version] = weight
    into.sticky = policy.sticky
    if policy.shadow is not None:
        into.shadow.version = policy.shadow.version
        into.shadow.fraction = policy.shadow.fraction
    if policy.rollout is not None:
        into.rollout_phase = policy.rollout.phase


def decode_weights(weights: Mapping[int, float]) -> dict[int, float]:
    decoded = {int(version): float(weight) for version, weight in weights.items()}
    if 0 in decoded:
        raise PolicyError("weights: version 0 is not a positive integer")
    return decoded


def encode_status(status: PolicyStatus) -> pb.PolicyReply:
    reply = pb.PolicyReply(model=status.model, file=str(status.file), error=status.error)
    if status.policy is not None:
        encode_policy(status.policy, reply.policy)
    return reply


def encode_entry(entry: HistoryEntry, into: pb.HistoryEntry) -> None:
    into.time = str(entry.to_dict()["time"])
    into.action = entry.action
    into.source = entry.source
    into.reason = entry.reason
    if entry.evidence is not None:
        into.evidence_json = json.dumps(entry.evidence, sort_keys=True)
    if entry.policy is not None:
        encode_policy(entry.policy, into.policy)
    if entry.previous is not None:
        encode_policy(entry.previous, into.previous)


def encode_change(model: str, entry: HistoryEntry) -> pb.PolicyChange:
    reply = pb.PolicyChange(model=model)
    encode_entry(entry, reply.change)
    return reply


def encode_history(model: str, entries: Iterable[HistoryEntry]) -> pb.HistoryReply:
    reply = pb.HistoryReply(model=model)
    for entry in entries:
        encode_entry(entry, reply.entries.add())
    return reply


def encode_versions(status: PolicyStatus, versions: Iterable[VersionInfo]) -> pb.VersionsReply:
    reply = pb.VersionsReply(model=status.model, policy_error=status.error)
    if status.policy is not None:
        encode_policy(status.policy, reply.policy)
    for info in versions:
        reply.versions.add(
            version=info.version,
            state=info.state,
            reason=info.reason,
            devices=list(info.devices),
            queue_depth=info.queue_depth,
            in_flight=info.in_flight,
            load_seconds=info.load_seconds,
            traffic_share=info.traffic_share,
            retired=info.retired,
        )
    return reply


def encode_shadow_stats(model: str, pairs: Iterable[ShadowPairSnapshot]) -> pb.ShadowStatsReply:
    reply = pb.ShadowStatsReply(model=model)
    for p in pairs:
        reply.pairs.add(
            primary=p.primary,
            shadow=p.shadow,
            compared=p.compared,
            agreement=p.agreement,
            mean_abs_diff=p.mean_abs_diff,
            mismatched=p.mismatched,
            failed=p.failed,
            dropped=p.dropped,
            latency_mean_seconds=p.latency_mean_s,
            latency_p50_seconds=p.latency_p50_s,
            latency_p99_seconds=p.latency_p99_s,
            latency_max_seconds=p.latency_max_s,
        )
    return reply


def decode_rollout(request: pb.StartRolloutRequest) -> RolloutPlan:
    """The plan of a StartRollout; zero / empty fields take the defaults (docs/rollout.md)."""
    return RolloutPlan(
        candidate=request.candidate,
        steps=tuple(request.steps) or DEFAULT_STEPS,
        step_time_s=request.step_time_seconds or DEFAULT_STEP_TIME_S,
        gates=parse_gates(request.gates or DEFAULT_GATES),
        min_requests=request.min_requests or DEFAULT_MIN_REQUESTS,
        shadow_s=request.shadow_seconds,
        shadow_fraction=request.shadow_fraction or DEFAULT_SHADOW_FRACTION,
        sticky=request.sticky,
        rollback_window_s=(
            request.rollback_window_seconds
            if request.rollback_window_seconds >= 0
            else DEFAULT_ROLLBACK_WINDOW_S
        ),
    )


def encode_rollout(view: RolloutView) -> pb.RolloutStatus:
    reply = pb.RolloutStatus(
        model=view.model,
        phase=view.phase,
        baseline=view.baseline,
        candidate=view.candidate,
        step=view.step,
        steps=list(view.steps),
        candidate_percent=view.candidate_percent,
        paused_phase=view.paused_phase,
        reason=view.reason,
        failed_gate=view.failed_gate,
        step_elapsed_seconds=view.step_elapsed_s,
        next_decision_seconds=view.next_decision_s,
        plan_json=json.dumps(view.plan, sort_keys=True) if view.plan else "",
        updated=view.updated,
        sticky=view.sticky,
        rollback_window_left_seconds=view.rollback_window_left_s,
    )
    for result in view.gates:
        reply.gates.add(
            gate=result.gate.name,
            op=result.gate.op,
            threshold=result.gate.threshold,
            statistic=result.statistic,
            lower=result.lower,
            upper=result.upper,
            verdict=result.verdict,
            candidate_count=result.candidate_count,
            baseline_count=result.baseline_count,
            detail=result.detail,
        )
    return reply


def rollout_json(reply: pb.RolloutStatus) -> dict[str, object]:
    """The JSON form of a RolloutStatus (`serving ctl rollout MODEL --status --json`, docs/rollout.md)."""

    def number(value: float) -> float | None:
        return None if math.isnan(value) else value

    return {
        "model": reply.model,
        "phase": reply.phase,
        "baseline": reply.baseline,
        "candidate": reply.candidate,
        "step": reply.step,
        "steps": list(reply.steps),
        "candidate_percent": reply.candidate_percent,
        "paused_phase": reply.paused_phase,
        "reason": reply.reason,
        "failed_gate": reply.failed_gate,
        "step_elapsed_s": reply.step_elapsed_seconds,
        "next_decision_s": number(reply.next_decision_seconds),
        "rollback_window_left_s": reply.rollback_window_left_seconds,
        "sticky": reply.sticky,
        "updated": reply.updated,
        "plan": json.loads(reply.plan_json) if reply.plan_json else None,
        "gates": [
            {
                "gate": g.gate,
                "op": g.op,
                "threshold": g.threshold,
                "statistic": number(g.statistic),
                "lower": number(g.lower),
                "upper": number(g.upper),
                "verdict": g.verdict,
                "candidate_count": g.candidate_count,
                "baseline_count": g.baseline_count,
                "detail": g.detail,
            }
            for g in reply.gates
        ],
    }
