"""Command line: ``python -m loadtests run|sweep|scenario|compare|report|noop-server|selfcost|bench``.

This module is the argument parser and the conversion of arguments into the load generator's types;
loadtests.commands runs the commands (and holds `main`), loadtests.exit_codes says what each exit
code means. The last line on stdout is the one-line verdict.
"""

from __future__ import annotations

import argparse
from typing import Any

from loadtests.bench import add_bench_command
from loadtests.inputs import InputSpec, parse_shape_overrides
from loadtests.keys import parse_keys
from loadtests.plan import LoadShape, TargetSpec, Timing
from loadtests.progress import MODES
from loadtests.units import parse_duration, parse_rate
from loadtests.wire import TlsFiles, read_tls

DEFAULT_URL = "127.0.0.1:8001"


def _target_arguments(parser: argparse.ArgumentParser, levels: bool, model_required: bool = True) -> None:
    group = parser.add_argument_group("target")
    group.add_argument("--url", default=DEFAULT_URL, help=f"server address host:port (default {DEFAULT_URL})")
    group.add_argument("--model", required=model_required, help="model name")
    group.add_argument("--version", default="", help="pin this version (default: let the server route)")
    load = group.add_mutually_exclusive_group(required=model_required)
    kind = str if levels else int
    load.add_argument(
        "--concurrency",
        type=kind,
        help="closed loop: requests in flight" + (" (levels: 1,2,4 or 1:64:x2)" if levels else ""),
    )
    load.add_argument(
        "--rate",
        type=str,
        help="open loop: requests per second" + (" (levels: 100:1000:+100)" if levels else ""),
    )
    group.add_argument(
        "--poisson", action="store_true", help="open loop with Poisson arrivals (default: constant)"
    )
    group.add_argument("--batch", type=int, default=1, help="samples per request (default 1)")
    group.add_argument(
        "--inputs", default="random", help="random | FILE.npy | FILE.npz | sample:MODEL_REPOSITORY"
    )
    group.add_argument(
        "--shape", action="append", default=[], metavar="NAME=D1,D2", help="per-sample shape for -1 dims"
    )
    group.add_argument("--routing-keys", help="key distribution, e.g. zipf:10000:1.1 or uniform:500")
    group.add_argument(
        "--expect-split", help="expected version weights, e.g. 1=90,2=10 (checked, gates the run)"
    )
    group.add_argument("--timeout", default="10s", help="per-request deadline (default 10s)")
    tls = parser.add_argument_group("TLS (a server started with --tls-cert)")
    tls.add_argument("--tls", action="store_true", help="TLS, trusting the system's CAs")
    tls.add_argument("--tls-ca", help="the CA that signed the server's certificate (PEM)")
    tls.add_argument("--tls-cert", help="mutual TLS: this client's certificate (PEM)")
    tls.add_argument("--tls-key", help="mutual TLS: its private key (PEM)")


def _run_arguments(parser: argparse.ArgumentParser, duration: str = "10s") -> None:
    group = parser.add_argument_group("timing and generator")
    group.add_argument(
        "--duration", default=duration, help=f"measured time per run or step (default {duration})"
    )
    group.add_argument("--warmup", default="1s", help="unmeasured warm-up before it (default 1s)")
    group.add_argument("--interval", default="1s", help="time-series resolution (default 1s)")
    group.add_argument("--workers", type=int, default=1, help="generator processes (default 1)")
    group.add_argument("--connections", type=int, default=1, help="gRPC connections per worker (default 1)")
    group.add_argument("--seed", type=int, default=0)
    group.add_argument(
        "--max-inflight", type=int, default=10_000, help="open-loop cap on requests in flight per worker"
    )


def _output_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("output")
    group.add_argument("--json", help="write the JSON result here")
    group.add_argument("--html", help="write the HTML report here")
    group.add_argument(
        "--progress", choices=MODES, default="auto", help="live progress (auto: rich on a terminal)"
    )


def _compare_command(commands: Any) -> None:
    compare = commands.add_parser("compare", help="candidate vs baseline: slower or faster beyond noise?")
    compare.add_argument("--baseline", help="saved run JSON")
    compare.add_argument("--candidate", help="saved run JSON")
    compare.add_argument("--baseline-version", help="run this version live as the baseline")
    compare.add_argument("--candidate-version", help="run this version live as the candidate")
    compare.add_argument("--target", help="target name inside saved JSON with several targets")
    compare.add_argument("--metric", choices=("p50", "p99", "throughput"), default="p50")
    compare.add_argument("--alpha", type=float, default=0.05)
    compare.add_argument("--min-effect", default="3%", help="smallest change that counts (default 3%%)")
    compare.add_argument("--rounds", type=int, default=1, help="live: A B, then B A, … blocks per side")
    _target_arguments(compare, levels=False, model_required=False)
    _run_arguments(compare)
    _output_arguments(compare)


def _noop_commands(commands: Any) -> None:
    noop = commands.add_parser(
        "noop-server", help="a KServe v2 server that does nothing (the generator's yardstick)"
    )
    noop.add_argument("--host", default="127.0.0.1")
    noop.add_argument("--port", type=int, default=8001)
    noop.add_argument("--versions", default="1=100", help="served versions and weights, e.g. 1=90,2=10")
    noop.add_argument("--sticky", action="store_true", help="version follows a hash of x-routing-key")
    noop.add_argument("--delay", default="0ms", help="added to every reply")
    noop.add_argument("--stall-at", help="stall once, this long after the first request")
    noop.add_argument("--stall-for", default="1s")
    noop.add_argument("--serve-for", help="exit after this long (default: until interrupted)")
    selfcost = commands.add_parser("selfcost", help="the generator's ceiling against the no-op server")
    selfcost.add_argument("--workers", type=int, default=1)
    selfcost.add_argument("--connections", type=int, default=1)
    selfcost.add_argument("--concurrency", type=int, default=64)
    selfcost.add_argument("--duration", default="5s")
    selfcost.add_argument(
        "--server-processes",
        type=int,
        default=0,
        help="no-op server processes on one port (default: = workers)",
    )
    selfcost.add_argument("--json")
    selfcost.add_argument("--progress", choices=MODES, default="auto")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m loadtests", description="Load tests that gate rollouts.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="one run at a fixed concurrency or rate, gated by --slo")
    _target_arguments(run, levels=False)
    _run_arguments(run)
    run.add_argument("--slo", help='e.g. "p99<25ms,errors<0.1%%,throughput>=500/s"')
    _output_arguments(run)
    sweep = commands.add_parser("sweep", help="step the load until the SLO breaks: capacity at SLO")
    _target_arguments(sweep, levels=True)
    _run_arguments(sweep, duration="5s")
    sweep.add_argument("--slo", required=True)
    _output_arguments(sweep)
    scenario = commands.add_parser("scenario", help="several models and operator actions from a JSON file")
    scenario.add_argument("file")
    scenario.add_argument("--url", help="server address (overrides the file's)")
    _output_arguments(scenario)
    _compare_command(commands)
    report = commands.add_parser("report", help="render a saved JSON result as HTML")
    report.add_argument("file")
    report.add_argument("--html", required=True)
    _noop_commands(commands)
    add_bench_command(commands)
    return parser


def parse_weights(text: str) -> dict[str, float]:
    """'1=90,2=10' → {'1': 90.0, '2': 10.0}."""
    weights: dict[str, float] = {}
    for part in text.split(","):
        name, sep, weight = part.partition("=")
        try:
            weights[name.strip()] = float(weight)
        except ValueError:
            sep = ""
        if not sep or not name.strip() or weights.get(name.strip(), -1) < 0:
            raise ValueError(f"bad weights {text!r}: expected VERSION=WEIGHT,..., e.g. 1=90,2=10")
    return weights


def load_shape(args: argparse.Namespace) -> LoadShape:
    if args.concurrency is not None:
        return LoadShape(concurrency=int(args.concurrency))
    return LoadShape(rate=parse_rate(args.rate), poisson=args.poisson)


def target_spec(args: argparse.Namespace, load: LoadShape, version: str | None = None) -> TargetSpec:
    return TargetSpec(
        model=args.model,
        load=load,
        version=args.version if version is None else version,
        batch=args.batch,
        inputs=InputSpec(args.inputs, parse_shape_overrides(args.shape)),
        keys=parse_keys(args.routing_keys) if args.routing_keys else None,
        timeout_s=parse_duration(args.timeout),
        expect_split=parse_weights(args.expect_split) if args.expect_split else None,
    )


def tls_of(args: argparse.Namespace) -> TlsFiles | None:
    """The --tls* flags' files, read now (ValueError naming the flag); None: plaintext."""
    return read_tls(args.tls_ca, args.tls_cert, args.tls_key, args.tls)


def timing(args: argparse.Namespace) -> Timing:
    return Timing(parse_duration(args.duration), parse_duration(args.warmup), parse_duration(args.interval))
