"""``python -m loadtests bench``: issue 8's table in one run, side by side on this machine.

It builds the bench models (models/bench_builder.py) into ``WORK/repo``, then measures, one after the
other: raw ONNX Runtime in this process (1 and 2 threads, batch 1 and the best batch); the no-model
gRPC server and ours (dynamic batching, and without), all up at once but loaded one at a time, their
windows interleaved per concurrency level (``--rounds`` rounds, the median kept); then MLServer 1.7.1
with ``--peer mlserver``. Each server is a subprocess on 127.0.0.1 that the bench starts and stops.
Every sampled reply is checked (ours' and MLServer's against in-process ONNX Runtime, the no-model
server's against the input it echoes); a wrong reply, or an error, fails the run (exit 1).
Options: ``--perf-analyzer`` (Triton's perf_analyzer confirms our figure at one load point) and
``--rss DURATION`` (ours' resident memory over a long run at c=32: flat within +-5%?).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from loadtests.bench_client import Probe, Window, measure
from loadtests.bench_raw import expected_outputs, raw_limit
from loadtests.bench_servers import ROOT, BenchServerError, Subprocess, start_noop, start_ours
from loadtests.bench_table import MLSERVER, NO_MODEL, OURS, OURS_NOBATCH, Block, render, verification
from loadtests.bench_targets import judge
from loadtests.exit_codes import EXIT_ERROR, EXIT_FAIL, EXIT_PASS
from loadtests.units import parse_duration

WIDTHS = {"mlp_small": 64, "mlp_large": 512}
DISTINCT_REQUESTS = 16


def add_bench_command(commands: Any) -> None:
    bench = commands.add_parser("bench", help="issue 8's table: raw, no-model, ours, MLServer, in one run")
    bench.add_argument("--models", default="mlp_small,mlp_large", help="bench models (default both)")
    bench.add_argument("--batch", default="1", help="rows per request, e.g. 1 or 1,8 (default 1)")
    bench.add_argument("--concurrency", default="1,8,32,64", help="columns (default 1,8,32,64)")
    bench.add_argument("--duration", default="3s", help="measured time per window (default 3s)")
    bench.add_argument("--warmup", default="0.3s", help="unmeasured time before each window")
    bench.add_argument("--rounds", type=int, default=1, help="windows per cell, interleaved; median shown")
    bench.add_argument("--work-dir", type=Path, default=ROOT / "build" / "bench")
    bench.add_argument("--check-every", type=int, default=16, help="check 1 reply in N after the first 64")
    bench.add_argument("--peer", choices=("mlserver",), help="also measure this server (own venv)")
    bench.add_argument(
        "--peer-configs", default="all", help="MLServer configurations to try: all, or e.g. off-0,on-default"
    )
    bench.add_argument(
        "--perf-analyzer", action="store_true", help="confirm ours at one load point with perf_analyzer"
    )
    bench.add_argument("--perf-analyzer-concurrency", type=int, default=8)
    bench.add_argument("--rss", help="also track ours' RSS over this long a run at c=32, e.g. 5m")
    bench.add_argument("--rss-concurrency", type=int, default=32)
    bench.add_argument("--json", type=Path, help="write every figure here")


def _levels(text: str, name: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise ValueError(f"--{name} {text!r}: expected positive integers, e.g. 1,8,32")
    return values


def build_repository(work_dir: Path, models: Sequence[str]) -> Path:
    repository = work_dir / "repo"
    builder = [
        sys.executable,
        str(ROOT / "models" / "bench_builder.py"),
        str(repository),
        "--models",
        *models,
    ]
    done = subprocess.run(builder, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise BenchServerError(f"models/bench_builder.py failed:\n{done.stdout}{done.stderr}")
    return repository


def probes(repository: Path, model: str, batch: int) -> tuple[Probe, Probe]:
    """(ours' probe with ONNX Runtime's outputs, the no-model server's: the same rows, echoed)."""
    rng = np.random.default_rng(batch)
    inputs = [
        rng.standard_normal((batch, WIDTHS[model])).astype(np.float32) for _ in range(DISTINCT_REQUESTS)
    ]
    expected = expected_outputs(repository / model / "1" / "model.onnx", inputs)
    echoed = [rows.copy() for rows in inputs]  # the no-model server echoes each input back
    return Probe(model, "input", "output", inputs, expected), Probe(model, "input", "input", inputs, echoed)


def median_window(windows: Sequence[Window]) -> Window:
    """The round with the median rows/s, carrying every round's checks and errors (all are verified)."""
    ordered = sorted(windows, key=lambda window: window.rows_per_s)
    chosen = ordered[(len(ordered) - 1) // 2]
    others = [window for window in windows if window is not chosen]
    chosen.checked += sum(window.checked for window in others)
    chosen.errors += sum(window.errors for window in others)
    for window in others:
        chosen.wrong += window.wrong
        chosen.first_error = chosen.first_error or window.first_error
    return chosen


def measure_interleaved(
    targets: dict[str, tuple[str, Probe]], levels: Sequence[int], args: argparse.Namespace
) -> dict[str, dict[int, Window]]:
    """For each level, `--rounds` rounds of one window per target, back to back (the targets' windows
    lie side by side in time, so a neighbour's burst hits them alike); the median round per cell."""
    duration, warmup = parse_duration(args.duration), parse_duration(args.warmup)
    cells: dict[str, dict[int, Window]] = {label: {} for label in targets}
    for c in levels:
        rounds: dict[str, list[Window]] = {label: [] for label in targets}
        for _ in range(args.rounds):
            for label, (url, probe) in targets.items():
                rounds[label].append(measure(url, probe, c, duration, warmup, args.check_every))
        for label, windows in rounds.items():
            cells[label][c] = median_window(windows)
    return cells


def run_bench(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except (BenchServerError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_ERROR


def _run(args: argparse.Namespace) -> int:
    models = [name.strip() for name in args.models.split(",") if name.strip()]
    unknown = sorted(set(models) - set(WIDTHS))
    if unknown or not models:
        raise ValueError(f"--models: unknown {unknown}; known {sorted(WIDTHS)}")
    if args.rounds < 1:
        raise ValueError(f"--rounds {args.rounds}: at least 1")
    batches, levels = _levels(args.batch, "batch"), _levels(args.concurrency, "concurrency")
    duration = parse_duration(args.duration)
    work_dir = Path(args.work_dir)
    repository = build_repository(work_dir, models)
    print(f"bench repository {repository} ({', '.join(models)}); measuring ...", flush=True)
    blocks = {(m, b): Block(m, b) for m in models for b in batches}
    pairs = {key: probes(repository, *key) for key in blocks}
    for model in models:
        raws = [
            raw_limit(repository / model / "1" / "model.onnx", WIDTHS[model], t, duration) for t in (1, 2)
        ]
        for batch in batches:
            blocks[(model, batch)].raw = raws
    variants = [name for model in models for name in (model, f"{model}_nobatch")]
    noop = start_noop(work_dir / "logs" / "noop.log")
    try:
        ours = start_ours(repository, variants, work_dir / "logs" / "ours.log")
        try:
            warm_problems = _warm_up(ours, noop, pairs, min(0.5, 2 * parse_duration(args.warmup)))
            for (model, batch), (probe, echo) in pairs.items():
                nobatch = _nobatch(probe)
                targets = {
                    NO_MODEL: (noop.url, echo),
                    OURS: (ours.url, probe),
                    OURS_NOBATCH: (ours.url, nobatch),
                }
                blocks[(model, batch)].rows.update(measure_interleaved(targets, levels, args))
            noop.stop()
            extra = warm_problems + _extras(ours, pairs[(models[0], batches[0])][0], args)
        finally:
            ours.stop()
    finally:
        noop.stop()
    if args.peer == "mlserver":
        from loadtests.bench_mlserver import measure_mlserver

        for key, best in measure_mlserver(work_dir, repository, pairs, levels, args).items():
            blocks[key].peer_label, blocks[key].rows[MLSERVER] = best
    return _report(list(blocks.values()), levels, duration, extra, args)


def _nobatch(probe: Probe) -> Probe:
    return Probe(f"{probe.model}_nobatch", probe.input_name, probe.output_name, probe.inputs, probe.expected)


def _warm_up(
    ours: Subprocess, noop: Subprocess, pairs: dict[tuple[str, int], tuple[Probe, Probe]], seconds: float
) -> list[str]:
    """Up to half a second (twice --warmup) at c=8 on every model variant and the no-model server before
    any window counts (first batches, allocator pools, a fresh server's lazy set-up); replies checked."""
    problems: list[str] = []
    for probe, echo in pairs.values():
        for url, target in ((noop.url, echo), (ours.url, probe), (ours.url, _nobatch(probe))):
            window = measure(url, target, 8, seconds, 0.0, 1)
            problems += [f"PROBLEM warm-up: {problem}" for problem in sorted(set(window.wrong))]
            if window.errors:
                problems.append(
                    f"PROBLEM warm-up {target.model}: {window.errors} errors, {window.first_error}"
                )
    return problems


def _extras(server: Subprocess, probe: Probe, args: argparse.Namespace) -> list[str]:
    lines: list[str] = []
    if args.perf_analyzer:
        from loadtests.bench_extras import confirm_with_perf_analyzer

        lines += confirm_with_perf_analyzer(server.url, probe, args)
    if args.rss:
        from loadtests.bench_extras import track_rss

        lines += track_rss(server, probe, args)
    return lines


def _report(
    blocks: list[Block], levels: Sequence[int], duration: float, extra: list[str], args: argparse.Namespace
) -> int:
    for line in render(blocks, levels, duration) + judge(blocks):
        print(line)
    for line in extra:
        print(line)
    checked, errors, problems = verification(blocks)
    if args.json:
        args.json.write_text(json.dumps(_document(blocks), indent=1))
    for problem in problems[:20]:
        print(f"PROBLEM {problem}")
    failed = bool(problems) or errors > 0 or checked == 0 or any(line.startswith("PROBLEM") for line in extra)
    print(
        f"replies verified against in-process ONNX Runtime: {checked} checked, "
        f"{sum(len(w.wrong) for b in blocks for ws in b.rows.values() for w in ws.values())} wrong, "
        f"{errors} errors: {'FAIL' if failed else 'PASS'}"
    )
    return EXIT_FAIL if failed else EXIT_PASS


def _document(blocks: Sequence[Block]) -> dict[str, Any]:
    return {
        "kind": "bench",
        "blocks": [
            {
                "model": block.model,
                "batch": block.batch,
                "peer": block.peer_label,
                "raw": [raw.__dict__ for raw in block.raw],
                "rows": {
                    label: {
                        str(c): {"rows_per_s": w.rows_per_s, "p50_ms": w.p50_s * 1e3, "errors": w.errors}
                        for c, w in windows.items()
                    }
                    for label, windows in block.rows.items()
                },
            }
            for block in blocks
        ],
    }
