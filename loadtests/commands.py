"""What each command does, once its arguments have parsed (see loadtests.cli)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from loadtests.bench import run_bench
from loadtests.cli import (
    build_parser,
    load_shape,
    parse_weights,
    target_spec,
    timing,
    tls_of,
)
from loadtests.compare import (
    Side,
    compare_sides,
    pick_target,
    render_compare,
    side_from_documents,
    side_from_run,
)
from loadtests.exit_codes import EXIT_ERROR, EXIT_FAIL, EXIT_PASS, EXIT_USAGE
from loadtests.noop_server import NoopConfig, start_noop_server
from loadtests.plan import LoadShape, RunPlan, ServerError, prepare
from loadtests.progress import make_progress
from loadtests.report import render_run
from loadtests.results import RunResult, read_json, short_summary, write_json
from loadtests.runner import execute
from loadtests.scenario import ScenarioError, load_scenario
from loadtests.selfcost import measure_self_cost, self_cost_line
from loadtests.slo import parse_slo
from loadtests.sweep import parse_levels, render_sweep, sweep
from loadtests.units import parse_duration
from loadtests.workers import WorkerError

Renderer = Callable[[dict[str, Any]], str]


def dispatch(args: argparse.Namespace) -> int:
    handlers: dict[str, Callable[[argparse.Namespace], Coroutine[Any, Any, int]]] = {
        "run": run_command,
        "sweep": sweep_command,
        "scenario": scenario_command,
        "compare": compare_command,
        "report": report_command,
        "noop-server": noop_command,
        "selfcost": selfcost_command,
    }
    try:
        if args.command == "bench":  # synchronous: it starts servers, each window runs in its own loop
            return run_bench(args)
        return asyncio.run(handlers[args.command](args))
    except (ServerError, WorkerError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_ERROR
    except ValueError as err:  # PlanError, ScenarioError, SloSyntaxError, InputError, …
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_ERROR


def emit(document: dict[str, Any], args: argparse.Namespace, renderer: Renderer) -> None:
    if getattr(args, "json", None):
        write_json(Path(args.json), document)
    if getattr(args, "html", None):
        Path(args.html).write_text(renderer(document))


def finish(passed: bool, lines: list[str]) -> int:
    for line in lines:
        print(line)
    return EXIT_PASS if passed else EXIT_FAIL


def _plan(args: argparse.Namespace, targets: Any) -> RunPlan:
    return RunPlan(
        args.url,
        targets,
        timing(args),
        workers=max(1, args.workers),
        connections=max(1, args.connections),
        seed=args.seed,
        max_inflight=args.max_inflight,
        tls=tls_of(args),
    )


async def run_command(args: argparse.Namespace) -> int:
    spec = target_spec(args, load_shape(args))
    targets = await prepare(args.url, [spec], args.seed, tls_of(args))
    slo = parse_slo(args.slo) if args.slo else None
    result = await execute(_plan(args, targets), progress=make_progress(args.progress), slo=slo)
    return _report_run(result, args)


def _report_run(result: RunResult, args: argparse.Namespace, title: str = "Load test") -> int:
    document = result.to_json()
    emit(document, args, lambda d: render_run(d, title))
    verdict = result.verdict()
    summaries = [short_summary(t) for t in result.targets]
    return finish(verdict.passed, [*summaries, verdict.line])


async def sweep_command(args: argparse.Namespace) -> int:
    closed = args.concurrency is not None
    levels = parse_levels(args.concurrency if closed else args.rate, integer=closed)
    first = (
        LoadShape(concurrency=int(levels[0])) if closed else LoadShape(rate=levels[0], poisson=args.poisson)
    )
    targets = await prepare(args.url, [target_spec(args, first)], args.seed, tls_of(args))
    result = await sweep(
        _plan(args, targets), levels, parse_slo(args.slo), lambda _: make_progress(args.progress)
    )
    document = result.to_json()
    emit(document, args, render_sweep)
    lines = [f"{result.mode} {s.level:g}: {s.verdict.line()}" for s in result.steps]
    return finish(result.capacity is not None, [*lines, result.line()])


async def scenario_command(args: argparse.Namespace) -> int:
    scenario = load_scenario(Path(args.file))
    url = args.url or scenario.url
    if not url:
        raise ScenarioError(f'{args.file}: no "url" in the file and no --url')
    scenario = scenario.with_url(url)
    targets = await prepare(url, scenario.targets, scenario.seed)
    plan = RunPlan(url, targets, scenario.timing, scenario.workers, scenario.connections, scenario.seed)
    result = await execute(plan, scenario.actions, make_progress(args.progress), scenario.slo)
    result.window_s = scenario.window_s
    return _report_run(result, args, f"Scenario {Path(args.file).name}")


async def compare_command(args: argparse.Namespace) -> int:
    min_effect = float(args.min_effect.rstrip("%")) / (100.0 if args.min_effect.endswith("%") else 1.0)
    baseline, candidate = await _compare_sides(args)
    comparison = compare_sides(baseline, candidate, args.metric, args.alpha, min_effect)
    document = comparison.to_json()
    emit(document, args, render_compare)
    lines = [m.describe() for m in comparison.metrics if m.metric != args.metric]
    return finish(not comparison.regressed, [*lines, comparison.line()])


async def _compare_sides(args: argparse.Namespace) -> tuple[Side, Side]:
    saved = {name: getattr(args, name) for name in ("baseline", "candidate") if getattr(args, name)}
    live = {
        name: getattr(args, f"{name}_version")
        for name in ("baseline", "candidate")
        if getattr(args, f"{name}_version")
    }
    if set(saved) & set(live) or len(saved) + len(live) != 2:
        raise ValueError(
            "give each of baseline and candidate once: --baseline FILE or --baseline-version V, and likewise"
        )
    documents = {name: read_json(Path(path)) for name, path in saved.items()}
    sides = {name: side_from_run(name, document, args.target) for name, document in documents.items()}
    if live:
        if documents and not args.model:
            _mirror_saved_load(args, next(iter(documents.values())))
        if not args.model or (args.concurrency is None and args.rate is None):
            raise ValueError("a live comparison needs --model and --concurrency or --rate")
        sides.update(await _live_sides(args, live))
    return sides["baseline"], sides["candidate"]


def _mirror_saved_load(args: argparse.Namespace, document: dict[str, Any]) -> None:
    """Live side vs a saved run with no --model: run the saved run's load (same model, shape, timing)."""
    spec = pick_target(document, args.target)["spec"]
    load, timing = spec["load"], document["timing"]
    args.model, args.batch, args.inputs = spec["model"], spec["batch"], spec["inputs"]
    args.routing_keys, args.timeout = spec["routing_keys"], f"{spec['timeout_s']}s"
    args.concurrency = load.get("concurrency")
    args.rate = str(load["rate"]) if load["mode"] == "open" else None
    args.poisson = bool(load.get("poisson"))
    args.duration, args.warmup, args.interval = (
        f"{timing[k]}s" for k in ("duration_s", "warmup_s", "interval_s")
    )


async def _live_sides(args: argparse.Namespace, versions: dict[str, str]) -> dict[str, Side]:
    """Alternate the live versions in blocks (A B, B A, …) under the same load."""
    specs = {name: target_spec(args, load_shape(args), version) for name, version in versions.items()}
    tls = tls_of(args)
    prepared = {name: (await prepare(args.url, [spec], args.seed, tls))[0] for name, spec in specs.items()}
    blocks: dict[str, list[RunResult]] = {name: [] for name in versions}
    order = list(versions)
    for round_index in range(max(1, args.rounds)):
        for name in order if round_index % 2 == 0 else list(reversed(order)):
            result = await execute(_plan(args, (prepared[name],)), progress=make_progress(args.progress))
            blocks[name].append(result)
    sides = {}
    for name, results in blocks.items():
        documents = [r.to_json()["targets"][0] for r in results]
        label = f"{name} v{versions[name]}"
        sides[name] = side_from_documents(
            label, documents, [r.timing.duration_s for r in results], results[0].timing.interval_s
        )
    return sides


async def report_command(args: argparse.Namespace) -> int:
    document = read_json(Path(args.file))
    renderers: dict[str, Renderer] = {"run": render_run, "sweep": render_sweep, "compare": render_compare}
    renderer = renderers.get(str(document.get("kind")))
    if renderer is None:
        raise ValueError(f"{args.file}: unknown result kind {document.get('kind')!r}")
    Path(args.html).write_text(renderer(document))
    return EXIT_PASS


async def noop_command(args: argparse.Namespace) -> int:
    config = NoopConfig(
        versions=parse_weights(args.versions),
        sticky=args.sticky,
        delay_s=parse_duration(args.delay),
        stall_at_s=parse_duration(args.stall_at) if args.stall_at else None,
        stall_s=parse_duration(args.stall_for),
    )
    server, port, _ = await start_noop_server(config, args.host, args.port)
    print(f"listening on {args.host}:{port}", flush=True)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, done.set)
    try:
        timeout = parse_duration(args.serve_for) if args.serve_for else None
        await asyncio.wait_for(done.wait(), timeout)
    except TimeoutError:
        pass
    finally:
        await server.stop(0.5)
    return EXIT_PASS


async def selfcost_command(args: argparse.Namespace) -> int:
    result = await measure_self_cost(
        args.workers,
        args.concurrency,
        parse_duration(args.duration),
        args.connections,
        make_progress(args.progress),
        server_processes=args.server_processes or args.workers,
    )
    if args.json:
        write_json(Path(args.json), result.to_json())
    print(self_cost_line(result))
    return EXIT_PASS


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m loadtests ...`: parse, check the SLO's syntax before any load, run the command."""
    args = build_parser().parse_args(argv)
    if getattr(args, "slo", None):
        try:
            parse_slo(args.slo)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return EXIT_USAGE
    return dispatch(args)
