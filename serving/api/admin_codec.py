"""serving.admin protobuf ⇄ domain types (routing.TrafficPolicy, policy_store.HistoryEntry, …)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from serving.admin.operations import VersionInfo
from serving.proto import admin_pb2 as pb
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
