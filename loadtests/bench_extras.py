"""The bench's two options beyond the table, both against ours while it runs.

``--perf-analyzer``: Triton's perf_analyzer (shipped in tritonclient) measures ours at one concurrency
(``-p 2000 -s 50``), and the bench's own client measures the same point right after; the two figures and
their ratio are printed (within 10% is expected: the bench's client is not the bottleneck).

``--rss DURATION``: ours' resident memory (``/proc/PID/status`` VmRSS) sampled every second while the
bench's client holds concurrency 32 for DURATION; flat means every sample after the first tenth of the
run (warm-up: allocator pools, first batches) within +-5% of their median.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from loadtests.bench_client import Probe, measure
from loadtests.bench_servers import Subprocess, rss_bytes
from loadtests.units import parse_duration

RSS_BAND = 0.05
AGREEMENT = 0.10
THROUGHPUT = re.compile(r"^Concurrency: (\d+), throughput: ([\d.]+) infer/sec", re.MULTILINE)


def perf_analyzer_binary() -> str | None:
    beside = Path(sys.executable).parent / "perf_analyzer"
    return str(beside) if beside.exists() else shutil.which("perf_analyzer")


def perf_analyzer_env() -> dict[str, str]:
    """perf_analyzer (tritonclient 2.41.0) loads libcudart.so.12 from nvidia-cuda-runtime-cu12."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    cudart = Path(sys.prefix) / "lib" / version / "site-packages" / "nvidia" / "cuda_runtime" / "lib"
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = f"{cudart}:{env.get('LD_LIBRARY_PATH', '')}"
    return env


def run_perf_analyzer(url: str, model: str, concurrency: int, batch: int) -> float:
    """perf_analyzer's infer/sec for `model` at `concurrency` (ValueError with its output if none)."""
    binary = perf_analyzer_binary()
    if binary is None:
        raise ValueError("perf_analyzer not found (it ships in tritonclient[grpc]==2.41.0)")
    args = [binary, "-m", model, "-i", "grpc", "-u", url, "-b", str(batch)]
    args += ["--concurrency-range", str(concurrency), "-p", "2000", "-s", "50", "--max-trials", "10"]
    done = subprocess.run(args, capture_output=True, text=True, env=perf_analyzer_env(), timeout=300)
    found = THROUGHPUT.findall(done.stdout)
    if done.returncode != 0 or not found:
        raise ValueError(
            f"perf_analyzer failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
        )
    return float(found[-1][1])


def confirm_with_perf_analyzer(url: str, probe: Probe, args: argparse.Namespace) -> list[str]:
    """perf_analyzer then the bench's client (a window of at least 4 s, like perf_analyzer's stable
    windows) at one point; on a shared machine a round that disagrees is measured once more."""
    concurrency = args.perf_analyzer_concurrency
    lines = ["", f"perf_analyzer confirms ours ({probe.model}, batch {probe.rows}, c={concurrency}):"]
    for _ in range(2):
        try:
            theirs = run_perf_analyzer(url, probe.model, concurrency, probe.rows)
        except ValueError as err:
            return [*lines, f"  perf_analyzer: {err}"]
        duration = max(parse_duration(args.duration), 4.0)
        window = measure(url, probe, concurrency, duration, parse_duration(args.warmup), args.check_every)
        ours = window.requests_per_s
        ratio = theirs / ours if ours > 0 else float("nan")
        agree = abs(ratio - 1) <= AGREEMENT
        verdict = "agree" if agree else f"differ by more than {AGREEMENT:.0%}"
        lines.append(
            f"  perf_analyzer {theirs:,.0f} infer/s, bench client {ours:,.0f} req/s, "
            f"ratio {ratio:.2f}: {verdict}"
        )
        lines += [f"PROBLEM perf_analyzer round: {problem}" for problem in sorted(set(window.wrong))]
        if agree:
            break
    return lines


def rss_flat(samples: list[int]) -> tuple[float, float, bool]:
    """(lowest, highest sample after warm-up as a fraction of their median, within +-5%?)"""
    settled = sorted(samples[len(samples) // 10 :]) or [0]
    median = settled[len(settled) // 2]
    if median <= 0:
        return float("nan"), float("nan"), False
    low, high = settled[0] / median, settled[-1] / median
    return low, high, (1 - RSS_BAND) <= low and high <= (1 + RSS_BAND)


def track_rss(server: Subprocess, probe: Probe, args: argparse.Namespace) -> list[str]:
    duration = parse_duration(args.rss)
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(1.0):
            samples.append(rss_bytes(server.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        window = measure(server.url, probe, args.rss_concurrency, duration, 0.0, args.check_every)
    finally:
        stop.set()
        sampler.join()
    low, high, flat = rss_flat(samples)
    mib = [round(value / 2**20) for value in samples]
    shown = mib if len(mib) <= 12 else mib[:: max(1, len(mib) // 12)]
    problems = [f"PROBLEM rss run: {problem}" for problem in sorted(set(window.wrong))]
    if window.errors:
        problems.append(f"PROBLEM rss run: {window.errors} errors, first {window.first_error}")
    return problems + [
        "",
        f"RSS of ours over {duration:g} s at c={args.rss_concurrency} ({probe.model}, "
        f"{window.requests_per_s:,.0f} req/s, {window.errors} errors, {len(window.wrong)} wrong): "
        f"MiB {shown}",
        f"  after warm-up: {low:.3f} .. {high:.3f} of the median: {'flat' if flat else 'NOT flat'} "
        f"(+-{RSS_BAND:.0%}) at {time.strftime('%H:%M:%S')}",
    ]
