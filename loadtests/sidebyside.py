"""Two builds of ours side by side, for "predicted gain, then measured gain" on a noisy machine.

    python -m loadtests.sidebyside --checkout base=/work/wt/base --checkout new=. \\
        --model mlp_small --concurrency 32 --rounds 7 --duration 2s [--server-args new='--frontends 2']

Each checkout (a git worktree of another commit, say) serves the bench repository (loadtests/bench.py
builds it) from its own folder with this interpreter; the no-model server runs beside them. Rounds of
one window per server, back to back, so a neighbour's burst hits them alike; every reply is checked
against in-process ONNX Runtime. Printed per server: median req/s, median p50 latency, and the server's
CPU per request (utime + stime of the whole process over the window, /proc, divided by every call of
the window, its checks and warm-up included), the steadier of the two figures here, and of that the
main thread's, which runs the event loop (at c=32 the loop is what limits ours: docs/performance.md).
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
from collections.abc import Sequence
from pathlib import Path

from loadtests.bench import WIDTHS, build_repository, probes
from loadtests.bench_client import Probe, measure
from loadtests.bench_servers import ROOT, Subprocess, start_noop, start_ours
from loadtests.units import parse_duration

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")  # /proc/PID/stat counts CPU time in these


def cpu_seconds(pid: int, thread: int | None = None) -> float:
    """CPU time (user + system) of process `pid`, or of its thread `thread` (the main thread: `pid`)."""
    where = f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat"
    fields = Path(where).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def main(argv: Sequence[str] | None = None) -> int:
    summary = (__doc__ or "").split("\n")[0]
    parser = argparse.ArgumentParser(prog="python -m loadtests.sidebyside", description=summary)
    parser.add_argument("--checkout", action="append", required=True, help="NAME=FOLDER (repeatable)")
    parser.add_argument("--server-args", action="append", default=[], help="NAME='extra serve flags'")
    parser.add_argument("--model", default="mlp_small", choices=sorted(WIDTHS))
    parser.add_argument("--batch", type=int, default=1, help="rows per request")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--duration", default="2s")
    parser.add_argument("--work-dir", type=Path, default=ROOT / "build" / "sidebyside")
    args = parser.parse_args(argv)
    checkouts = dict(item.split("=", 1) for item in args.checkout)
    extras = {k: shlex.split(v) for k, v in (item.split("=", 1) for item in args.server_args)}
    repository = build_repository(args.work_dir, [args.model])
    ours_probe, echo_probe = probes(repository, args.model, args.batch)
    servers: dict[str, tuple[Subprocess, Probe]] = {}
    try:
        for name, folder in checkouts.items():
            log = args.work_dir / "logs" / f"{name}.log"
            checkout, extra = Path(folder).resolve(), extras.get(name, ())
            server = start_ours(repository, [args.model], log, checkout=checkout, extra=extra, name=name)
            servers[name] = (server, ours_probe)
        servers["no-model"] = (start_noop(args.work_dir / "logs" / "no-model.log"), echo_probe)
        return _measure(servers, args)
    finally:
        for server, _ in servers.values():
            server.stop()


def _measure(servers: dict[str, tuple[Subprocess, Probe]], args: argparse.Namespace) -> int:
    duration = parse_duration(args.duration)
    rates: dict[str, list[float]] = {name: [] for name in servers}
    costs: dict[str, list[float]] = {name: [] for name in servers}
    p50s: dict[str, list[float]] = {name: [] for name in servers}
    loops: dict[str, list[float]] = {name: [] for name in servers}  # the main thread runs the event loop
    problems: list[str] = []
    for server, probe in servers.values():  # warm-up, every reply checked
        window = measure(server.url, probe, args.concurrency, 0.5, 0.2, 1)
        problems += window.wrong + ([window.first_error] if window.errors else [])
    for _ in range(args.rounds):
        for name, (server, probe) in servers.items():
            before, loop_before = cpu_seconds(server.pid), cpu_seconds(server.pid, server.pid)
            window = measure(server.url, probe, args.concurrency, duration, 0.2, 16)
            spent = cpu_seconds(server.pid) - before
            loop_spent = cpu_seconds(server.pid, server.pid) - loop_before
            loops[name].append(1e6 * loop_spent / max(window.calls, 1))
            problems += window.wrong + ([window.first_error] if window.errors else [])
            rates[name].append(window.requests_per_s)
            p50s[name].append(window.p50_s)
            costs[name].append(1e6 * spent / max(window.calls, 1))  # the window's checks and warm-up too
    windows = f"{args.rounds} interleaved {args.duration} windows"
    print(f"{args.model}, batch {args.batch}, c={args.concurrency}: {windows}")
    for name in servers:
        runs = " ".join(f"{rate:,.0f}" for rate in rates[name])
        print(
            f"  {name:12s} median {statistics.median(rates[name]):8,.0f} req/s, "
            f"server CPU {statistics.median(costs[name]):5.0f} us/request "
            f"(event loop {statistics.median(loops[name]):4.0f}), "
            f"p50 {1e3 * statistics.median(p50s[name]):.2f} ms   (rounds: {runs})"
        )
    for problem in problems[:5]:
        print(f"  problem: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
