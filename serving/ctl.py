"""`serving ctl`: the operator's command line for a running server (admin API + KServe load/unload).

    serving ctl [--url HOST:PORT] [--token-file FILE] [--tls-ca CA --tls-cert CERT --tls-key KEY] COMMAND ...
      index                               models, versions and states of the repository
      versions MODEL                      each version: state, traffic share, queue, load time, reason
      policy MODEL                        the traffic policy in force
      split MODEL V=W [V=W ...] [--sticky | --no-sticky]
      shadow MODEL VERSION [--fraction F] | shadow MODEL off
      promote MODEL VERSION               all traffic to VERSION
      rollback MODEL                      back to the policy before the latest change
      clear MODEL                         remove the policy (the highest READY version serves)
      history MODEL [--limit N] [--json]
      shadow-stats MODEL                  agreement and latency per (primary, shadow) pair
      rollout MODEL --to V [...] | --status [--json] | --pause | --resume | --abort
                                          progressive rollout in the server (serving/ctl_rollout.py)
      load MODEL | unload MODEL

Exit status: 0 on success, 1 when the server refuses or fails (its message is printed), 2 on a usage
error. Nothing here holds logic the API lacks: each command is one RPC and a table.
"""

from __future__ import annotations

import argparse
import getpass
import json
import math
import os
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from serving import ctl_rollout
from serving.api.auth import read_token
from serving.api.tls import client_tls
from serving.proto import admin_pb2 as apb
from serving.proto import admin_pb2_grpc, inference_pb2_grpc
from serving.proto import inference_pb2 as ipb

DEFAULT_URL = "127.0.0.1:8001"
LOAD_TIMEOUT_S = 600.0


class UsageError(Exception):
    """A command line that cannot be sent (exit status 2)."""


@dataclass
class Client:
    admin: admin_pb2_grpc.ModelAdminStub
    inference: inference_pb2_grpc.GRPCInferenceServiceStub
    metadata: list[tuple[str, str]]
    timeout_s: float

    def call(self, method: Callable[..., Any], request: Any, timeout_s: float | None = None) -> Any:
        return method(request, timeout=timeout_s or self.timeout_s, metadata=self.metadata)


Command = Callable[[Client, argparse.Namespace], str]


# ---- formatting ------------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [list(headers)] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def _plain(number: float) -> str:
    return f"{number:g}"


def policy_text(policy: apb.Policy, present: bool = True) -> str:
    if not present:
        return "none (the highest READY version serves)"
    parts = [f"{v}={_plain(w)}" for v, w in sorted(policy.weights.items())]
    if policy.sticky:
        parts.append("sticky")
    if policy.HasField("shadow"):
        parts.append(f"shadow={policy.shadow.version}@{policy.shadow.fraction:.4g}")
    if policy.rollout_phase:
        parts.append(f"rollout={policy.rollout_phase}")
    return " ".join(parts)


def _percent(value: float) -> str:
    return "-" if math.isnan(value) else f"{100 * value:.1f}%"


def _change_text(reply: apb.PolicyChange) -> str:
    change = reply.change
    before = policy_text(change.previous, change.HasField("previous"))
    after = policy_text(change.policy, change.HasField("policy"))
    return f"{reply.model}: {change.action}: {before}  →  {after}"


# ---- commands ----------------------------------------------------------------------------------------


def cmd_index(client: Client, args: argparse.Namespace) -> str:
    reply = client.call(client.inference.RepositoryIndex, ipb.RepositoryIndexRequest())
    rows = [(m.name, m.version or "-", m.state, m.reason) for m in reply.models]
    return table(("MODEL", "VERSION", "STATE", "REASON"), rows)


def cmd_versions(client: Client, args: argparse.Namespace) -> str:
    reply = client.call(client.admin.Versions, apb.ModelRef(model=args.model))
    rows = [
        (
            f"{v.version}" + (" (old)" if v.retired else ""),
            v.state,
            _percent(v.traffic_share) if v.state == "READY" and not v.retired else "-",
            v.queue_depth,
            v.in_flight,
            f"{v.load_seconds:.2f}s" if v.load_seconds else "-",
            ",".join(v.devices) or "-",
            v.reason,
        )
        for v in reply.versions
    ]
    if not rows:
        return f"{args.model}: not loaded (serving ctl load {args.model})"
    lines = [table(("VERSION", "STATE", "TRAFFIC", "QUEUE", "IN-FLIGHT", "LOAD", "DEVICES", "REASON"), rows)]
    lines.append(f"policy: {policy_text(reply.policy, reply.HasField('policy'))}")
    if reply.policy_error:
        lines.append(
            f"warning: the policy file was rejected, the last good policy stays: {reply.policy_error}"
        )
    return "\n".join(lines)


def cmd_policy(client: Client, args: argparse.Namespace) -> str:
    reply = client.call(client.admin.GetPolicy, apb.ModelRef(model=args.model))
    lines = [f"{reply.model}: {policy_text(reply.policy, reply.HasField('policy'))}", f"file: {reply.file}"]
    if reply.error:
        lines.append(f"warning: the policy file was rejected, the last good policy stays: {reply.error}")
    return "\n".join(lines)


def parse_weights(items: Sequence[str]) -> dict[int, float]:
    weights: dict[int, float] = {}
    for item in items:
        version, sep, weight = item.partition("=")
        try:
            number, value = int(version), float(weight)
        except ValueError:
            number, value = 0, -1.0
        if not sep or number <= 0 or not (value >= 0 and math.isfinite(value)):
            raise UsageError(
                f"'{item}' is not VERSION=WEIGHT (e.g. 1=90), a positive version and a weight >= 0"
            )
        if number in weights:
            raise UsageError(f"version {number} is given twice")
        weights[number] = value
    return weights


def cmd_split(client: Client, args: argparse.Namespace) -> str:
    request = apb.SetSplitRequest(model=args.model, weights=parse_weights(args.weights))
    if args.sticky is not None:
        request.sticky = args.sticky
    return _change_text(client.call(client.admin.SetSplit, request))


def cmd_shadow(client: Client, args: argparse.Namespace) -> str:
    if args.version == "off":
        return _change_text(client.call(client.admin.ClearShadow, apb.ModelRef(model=args.model)))
    if not args.version.isdigit() or int(args.version) <= 0:
        raise UsageError(f"shadow: '{args.version}' is not a version number (or 'off')")
    if not 0 < args.fraction <= 1:
        raise UsageError(f"--fraction must be in (0, 1], got {args.fraction}")
    request = apb.SetShadowRequest(model=args.model, version=int(args.version), fraction=args.fraction)
    return _change_text(client.call(client.admin.SetShadow, request))


def cmd_promote(client: Client, args: argparse.Namespace) -> str:
    request = apb.PromoteRequest(model=args.model, version=args.version)
    return _change_text(client.call(client.admin.Promote, request))


def cmd_rollback(client: Client, args: argparse.Namespace) -> str:
    return _change_text(client.call(client.admin.Rollback, apb.ModelRef(model=args.model)))


def cmd_clear(client: Client, args: argparse.Namespace) -> str:
    return _change_text(client.call(client.admin.ClearPolicy, apb.ModelRef(model=args.model)))


def cmd_history(client: Client, args: argparse.Namespace) -> str:
    reply = client.call(client.admin.History, apb.HistoryRequest(model=args.model, limit=args.limit))
    if args.json:
        return json.dumps([_entry_json(e) for e in reply.entries], indent=2)
    rows = [
        (e.time, e.action, policy_text(e.policy, e.HasField("policy")), e.source, e.reason)
        for e in reply.entries
    ]
    headers = ("TIME", "ACTION", "POLICY", "SOURCE", "REASON")
    return table(headers, rows) if rows else f"{args.model}: no changes yet"


def _entry_json(entry: apb.HistoryEntry) -> dict[str, Any]:
    return {
        "time": entry.time,
        "action": entry.action,
        "policy": policy_text(entry.policy, entry.HasField("policy")),
        "previous": policy_text(entry.previous, entry.HasField("previous")),
        "source": entry.source,
        "reason": entry.reason,
        "evidence": json.loads(entry.evidence_json) if entry.evidence_json else None,
    }


def cmd_rollout(client: Client, args: argparse.Namespace) -> str:
    try:
        return ctl_rollout.run(client, args)
    except ctl_rollout.RolloutUsageError as exc:
        raise UsageError(str(exc)) from None


def cmd_shadow_stats(client: Client, args: argparse.Namespace) -> str:
    reply = client.call(client.admin.ShadowStats, apb.ModelRef(model=args.model))
    rows = [
        (
            p.primary,
            p.shadow,
            p.compared,
            _percent(p.agreement),
            "-" if math.isnan(p.mean_abs_diff) else f"{p.mean_abs_diff:.4g}",
            p.failed,
            p.dropped,
            f"{1000 * p.latency_mean_seconds:.2f}",
            f"{1000 * p.latency_p99_seconds:.2f}",
        )
        for p in reply.pairs
    ]
    headers = (
        "PRIMARY",
        "SHADOW",
        "COMPARED",
        "AGREEMENT",
        "MEAN|DIFF|",
        "FAILED",
        "DROPPED",
        "MS MEAN",
        "MS P99",
    )
    return table(headers, rows) if rows else f"{args.model}: no shadow copies yet"


def cmd_load(client: Client, args: argparse.Namespace) -> str:
    request = ipb.RepositoryModelLoadRequest(model_name=args.model)
    client.call(client.inference.RepositoryModelLoad, request, LOAD_TIMEOUT_S)
    return f"{args.model}: loaded"


def cmd_unload(client: Client, args: argparse.Namespace) -> str:
    request = ipb.RepositoryModelUnloadRequest(model_name=args.model)
    client.call(client.inference.RepositoryModelUnload, request, LOAD_TIMEOUT_S)
    return f"{args.model}: unloaded (drained)"


# ---- the parser and the run ------------------------------------------------------------------------


def add_parser(sub: Any) -> None:
    """Add `ctl` and its commands to the `serving` command's subparsers."""
    parser = sub.add_parser("ctl", help="operate a running server (versions, traffic, load/unload)")
    parser.add_argument("--url", default=os.environ.get("SERVING_CTL_URL", DEFAULT_URL), help="HOST:PORT")
    parser.add_argument(
        "--token-file", type=Path, default=os.environ.get("SERVING_ADMIN_TOKEN_FILE"), help="admin token"
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per call (load: 600)")
    add_tls_arguments(parser)
    commands = parser.add_subparsers(dest="ctl_command", required=True, metavar="COMMAND")

    def command(name: str, func: Command, help_text: str, model: bool = True) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = commands.add_parser(name, help=help_text)
        if model:
            p.add_argument("model")
        p.set_defaults(func=func)
        return p

    command("index", cmd_index, "models, versions and states", model=False)
    command("versions", cmd_versions, "each version's state, traffic share, queue, load time")
    command("policy", cmd_policy, "the traffic policy in force")
    split = command("split", cmd_split, "weighted split, e.g. 1=90 2=10")
    split.add_argument("weights", nargs="+", metavar="VERSION=WEIGHT")
    split.add_argument("--sticky", action=argparse.BooleanOptionalAction, default=None)
    shadow = command("shadow", cmd_shadow, "copy a fraction of the requests to VERSION ('off' stops)")
    shadow.add_argument("version", metavar="VERSION|off")
    shadow.add_argument("--fraction", type=float, default=0.1, help="in (0, 1], default 0.1")
    promote = command("promote", cmd_promote, "all traffic to VERSION")
    promote.add_argument("version", type=int)
    command("rollback", cmd_rollback, "back to the policy before the latest change")
    command("clear", cmd_clear, "remove the policy: the highest READY version serves")
    history = command("history", cmd_history, "changes of the policy, oldest first")
    history.add_argument("--limit", type=int, default=0, help="only the latest N (0 = all)")
    history.add_argument("--json", action="store_true", help="one JSON object per change, with evidence")
    command("shadow-stats", cmd_shadow_stats, "shadow agreement and latency per version pair")
    rollout = command("rollout", cmd_rollout, "progressive rollout to a candidate, judged by gates")
    ctl_rollout.add_arguments(rollout)
    command("load", cmd_load, "(re)load MODEL from the repository (hot swap)")
    command("unload", cmd_unload, "drain, then unload MODEL")


def add_tls_arguments(parser: argparse.ArgumentParser) -> None:
    """The client's TLS flags (serving ctl, loadtests): any of them turns TLS on."""
    group = parser.add_argument_group("TLS (a server started with --tls-cert)")
    group.add_argument("--tls", action="store_true", help="TLS, trusting the system's CAs")
    group.add_argument("--tls-ca", type=Path, help="the CA that signed the server's certificate (PEM)")
    group.add_argument("--tls-cert", type=Path, help="mutual TLS: this client's certificate (PEM)")
    group.add_argument("--tls-key", type=Path, help="mutual TLS: its private key (PEM)")


def open_channel(args: argparse.Namespace) -> grpc.Channel:
    """A channel to args.url: TLS when a TLS flag is given; ValueError on unusable TLS files."""
    tls = client_tls(args.tls_ca, args.tls_cert, args.tls_key, args.tls)
    if tls is None:
        return grpc.insecure_channel(args.url)
    try:
        return grpc.secure_channel(args.url, tls.grpc_credentials())
    except OSError as exc:
        raise ValueError(f"TLS files: {exc}") from None


def _metadata(token_file: Path | None) -> list[tuple[str, str]]:
    metadata = [("x-operator", f"{getpass.getuser()}@{socket.gethostname()}")]
    if token_file is not None:
        metadata.append(("authorization", f"Bearer {read_token(Path(token_file))}"))
    return metadata


def run(args: argparse.Namespace) -> int:
    try:
        metadata = _metadata(args.token_file)
        channel = open_channel(args)
    except ValueError as exc:
        print(f"serving ctl: {exc}", file=sys.stderr)
        return 2
    with channel:
        client = Client(
            admin_pb2_grpc.ModelAdminStub(channel),  # type: ignore[no-untyped-call]
            inference_pb2_grpc.GRPCInferenceServiceStub(channel),  # type: ignore[no-untyped-call]
            metadata,
            args.timeout,
        )
        try:
            print(args.func(client, args))
        except UsageError as exc:
            print(f"serving ctl {args.ctl_command}: {exc}", file=sys.stderr)
            return 2
        except grpc.RpcError as exc:
            print(f"serving ctl {args.ctl_command}: {_rpc_error_text(exc, args.url)}", file=sys.stderr)
            return 1
    return 0


def _rpc_error_text(exc: grpc.RpcError, url: str) -> str:
    code: grpc.StatusCode = exc.code()
    details: str = exc.details() or ""
    if code is grpc.StatusCode.UNAVAILABLE and "connect" in details.lower():
        return f"cannot reach the server at {url}: {details}"
    if code is grpc.StatusCode.UNIMPLEMENTED:
        return f"{url} does not serve this call (admin API on another port? see --admin-port): {details}"
    return f"{code.name}: {details}"
