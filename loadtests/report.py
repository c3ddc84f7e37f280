"""The HTML report: one self-contained page (inline CSS and SVG, no scripts, no network).

It is rendered from the JSON result document, so a saved result can be rendered again later
(``python -m loadtests report result.json --html out.html``). Sweeps and comparisons add their own
sections (loadtests.sweep, loadtests.compare) using the helpers here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from loadtests.histogram import LatencyHistogram
from loadtests.svg import PALETTE, Axes, Marker, Series, bar_chart, line_chart, stacked_area

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:0;background:#f9fafb;color:#111827}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:18px;margin:28px 0 8px} h3{font-size:15px;margin:18px 0 6px}
.meta{color:#6b7280;font-size:13px}
.verdict{border-radius:10px;padding:14px 18px;margin:16px 0;font-size:15px;font-weight:600}
.pass{background:#ecfdf5;border:1px solid #10b981;color:#065f46}
.fail{background:#fef2f2;border:1px solid #ef4444;color:#991b1b}
.neutral{background:#eff6ff;border:1px solid #60a5fa;color:#1e3a8a}
.verdict div{font-weight:400;font-size:13px;margin-top:4px;font-family:ui-monospace,monospace}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:10px 0}
.card{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:10px 14px;flex:1;min-width:90px}
.card b{display:block;font-size:20px} .card span{color:#6b7280;font-size:12px}
table{border-collapse:collapse;background:#fff;font-size:13px;margin:6px 0}
th,td{border:1px solid #e5e7eb;padding:5px 9px;text-align:right} th{background:#f3f4f6}
td:first-child,th:first-child{text-align:left}
table.text td,table.text th{text-align:left;vertical-align:top}
.chart{background:#fff;border:1px solid #e5e7eb;border-radius:8px;margin:8px 0}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:10px} .ok{color:#047857} .bad{color:#b91c1c}
section.target{border-top:2px solid #e5e7eb;margin-top:26px}
"""
NINES_TICKS = [
    (0.0, "min"),
    (math.log10(2), "50%"),
    (1.0, "90%"),
    (2.0, "99%"),
    (3.0, "99.9%"),
    (4.0, "99.99%"),
    (5.0, "99.999%"),
]


def fmt_ms(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value * 1000:.0f}µs" if value < 1 else f"{value:.2f}ms" if value < 100 else f"{value:,.0f}ms"


def page(title: str, body: Sequence[str]) -> str:
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{CSS}</style></head><body><main>{''.join(body)}</main></body></html>\n"
    )


def verdict_box(passed: bool | None, headline: str, lines: Sequence[str]) -> str:
    css = "neutral" if passed is None else "pass" if passed else "fail"
    inner = "".join(f"<div>{escape(line)}</div>" for line in lines)
    return f'<div class="verdict {css}">{escape(headline)}{inner}</div>'


def cards(items: Sequence[tuple[str, str]]) -> str:
    return (
        '<div class="cards">'
        + "".join(f'<div class="card"><b>{escape(v)}</b><span>{escape(k)}</span></div>' for k, v in items)
        + "</div>"
    )


def table(header: Sequence[str], rows: Sequence[Sequence[str]], text: bool = False) -> str:
    """An HTML table; ``text`` aligns every column left (for prose rather than numbers)."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    css = ' class="text"' if text else ""
    return f"<table{css}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def percentile_points(histogram: Mapping[str, Any]) -> list[tuple[float, float | None]]:
    """(nines, latency ms) along x = -log10(1 - p/100), up to the resolution the count supports."""
    hist = LatencyHistogram.from_dict(histogram)
    if hist.count == 0:
        return []
    top = min(5.0, math.log10(hist.count)) if hist.count > 1 else 0.0
    steps = max(1, int(top / 0.05))
    points: list[tuple[float, float | None]] = []
    for i in range(steps + 1):
        x = top * i / steps
        points.append((x, hist.percentile(100.0 * (1.0 - 10.0**-x)) / 1e6))
    return points


def percentile_chart(
    named: Sequence[tuple[str, Mapping[str, Any]]], title: str = "Latency by percentile", width: int = 760
) -> str:
    series = [
        Series(name, percentile_points(h), PALETTE[i % len(PALETTE)]) for i, (name, h) in enumerate(named)
    ]
    top = max((x for s in series for x, _ in s.points), default=1.0)
    ticks = [t for t in NINES_TICKS if t[0] <= top + 1e-9]
    axes = Axes(title, "percentile", "latency (ms)", width, x_ticks=ticks, y_format=_ms_tick)
    return line_chart(series, axes)


def _ms_tick(v: float) -> str:
    return f"{v:g}"


def action_markers(document: Mapping[str, Any]) -> list[Marker]:
    return [
        Marker(float(a["started_s"]), f"{a['action']}", "#16a34a" if a["ok"] else "#dc2626")
        for a in document.get("actions", [])
    ]


def latency_chart(
    intervals: Sequence[Mapping[str, Any]], markers: Sequence[Marker], interval_s: float
) -> str:
    def pts(key: str) -> list[tuple[float, float | None]]:
        return [(row["t"] + interval_s / 2, row[key]) for row in intervals]

    series = [
        Series("p50", pts("p50_ms"), PALETTE[0]),
        Series("p90", pts("p90_ms"), PALETTE[2]),
        Series("p99", pts("p99_ms"), PALETTE[1]),
        Series("max", pts("max_ms"), "#9ca3af", dashed=True, width=1.2),
    ]
    return line_chart(
        series, Axes("Latency over time (by intended send time)", "time (s)", "latency (ms)"), markers
    )


def throughput_chart(
    intervals: Sequence[Mapping[str, Any]], markers: Sequence[Marker], interval_s: float, width: int = 760
) -> str:
    ok = [(row["t"] + interval_s / 2, row["throughput"]) for row in intervals]
    errors = [(row["t"] + interval_s / 2, sum(row["errors"].values()) / interval_s) for row in intervals]
    series = [Series("ok/s", ok, PALETTE[0])]
    if any(y for _, y in errors):
        series.append(Series("errors/s", errors, PALETTE[3]))
    return line_chart(series, Axes("Throughput over time", "time (s)", "responses / s", width), markers)


def split_charts(target: Mapping[str, Any], markers: Sequence[Marker], interval_s: float) -> str:
    """Versions over time (stacked), and the observed split with its CI against the expected weights.

    With routing keys the bars show the split over keys (the unit a sticky split assigns), else over
    requests.
    """
    versions = [v["version"] for v in target["versions"]]
    if len(versions) < 2 and not target["spec"].get("expect_split"):
        return ""
    rows = [r for r in target["intervals"] if sum(r["versions"].values())]
    xs = [r["t"] + interval_s / 2 for r in rows]
    layers = [
        (f"v{v}", [r["versions"].get(v, 0) / sum(r["versions"].values()) for r in rows]) for v in versions
    ]
    percent = lambda v: f"{v:.0%}"  # noqa: E731
    area = stacked_area(
        xs,
        layers,
        Axes("Served versions over time", "time (s)", "share of responses", 520, y_format=percent),
        markers,
    )
    keys = target.get("keys")
    table_ = keys.get("shares", target["versions"]) if keys else target["versions"]
    basis = "routing key" if keys else "request"
    bars = [(f"v{v['version']}", v["share"], v["ci95"][0], v["ci95"][1]) for v in table_]
    expected = [v["expected"] for v in table_]
    title = f"Split by {basis} (95% CI); expected dashed"
    bar = bar_chart(bars, Axes(title, "version", "share", 520, y_format=percent, y_max=1.0), expected)
    return f'<div class="grid">{area}{bar}</div>'


def target_section(target: Mapping[str, Any], document: Mapping[str, Any]) -> str:
    summary, interval_s = target["summary"], float(document["timing"]["interval_s"])
    latency, spec = summary["latency_ms"], target["spec"]
    markers = action_markers(document)
    parts = [
        f'<section class="target"><h2>{escape(target["name"])}</h2>',
        f'<p class="meta">model {escape(spec["model"])}, version {escape(str(spec["version"] or "routed"))}, '
        f"{escape(_load_text(spec['load']))}, batch {spec['batch']}, inputs {escape(spec['inputs'])}"
        f"{', keys ' + escape(spec['routing_keys']) if spec['routing_keys'] else ''}</p>",
    ]
    if target.get("slo"):
        parts.append(
            verdict_box(target["slo"]["passed"], f"SLO {target['slo']['text']}", [target["slo"]["line"]])
        )
    error_rate = summary["error_rate"]
    parts.append(
        cards(
            [
                ("throughput", f"{summary['throughput']:,.1f}/s"),
                ("p50", fmt_ms(latency["p50"])),
                ("p90", fmt_ms(latency["p90"])),
                ("p99", fmt_ms(latency["p99"])),
                ("p99.9", fmt_ms(latency["p99.9"])),
                ("max", fmt_ms(latency["max"])),
                ("requests", f"{summary['requests']:,}"),
                (
                    "errors",
                    f"{summary['requests'] - summary['ok']:,}"
                    + (f" ({error_rate:.2%})" if error_rate else ""),
                ),
            ]
        )
    )
    parts.append(latency_chart(target["intervals"], markers, interval_s))
    parts.append(
        f'<div class="grid">{throughput_chart(target["intervals"], markers, interval_s, 520)}'
        f"{percentile_chart([(target['name'], target['histogram'])], width=520)}</div>"
    )
    parts.append(split_charts(target, markers, interval_s))
    parts.append(_details(target))
    parts.append("</section>")
    return "".join(parts)


def _load_text(load: Mapping[str, Any]) -> str:
    if load["mode"] == "closed":
        return f"closed loop, concurrency {load['concurrency']}"
    return f"open loop, {'Poisson' if load.get('poisson') else 'constant'} {load['rate']:g}/s"


def _details(target: Mapping[str, Any]) -> str:
    summary = target["summary"]
    parts = []
    if summary["errors"]:
        parts.append(
            "<h3>Errors by status code</h3>"
            + table(["code", "count"], [[c, f"{n:,}"] for c, n in summary["errors"].items()])
        )
    versions = target["versions"]
    if versions:
        rows = [
            [
                f"v{v['version']}",
                f"{v['count']:,}",
                f"{v['share']:.2%}",
                f"{v['ci95'][0]:.2%} – {v['ci95'][1]:.2%}",
                "-" if v["expected"] is None else f"{v['expected']:.0%}",
            ]
            for v in versions
        ]
        parts.append(
            "<h3>Responses per served version</h3>"
            + table(["version", "responses", "share", "95% CI", "expected"], rows)
        )
    if target.get("keys"):
        keys = target["keys"]
        per = ", ".join(f"v{v}: {n:,}" for v, n in keys["per_version"].items())
        parts.append(
            f'<p class="meta">routing keys seen: {keys["distinct"]:,}; keys per version: {escape(per)}; '
            f"keys served by more than one version: {keys['moved']:,}</p>"
        )
    if target.get("split_check"):
        check = target["split_check"]
        css = "ok" if check["matches"] else "bad"
        parts.append(
            f'<p class="{css}">{escape(check["line"])} — '
            f"{'matches' if check['matches'] else 'does not match'} "
            f"the expected split ({check['confidence']:.0%} Wilson interval)</p>"
        )
    if summary.get("generator_lag_ms"):
        lag = summary["generator_lag_ms"]
        parts.append(
            f'<p class="meta">generator lag (actual − intended send): p50 {fmt_ms(lag["p50"])}, '
            f"p99 {fmt_ms(lag['p99'])}, max {fmt_ms(lag['max'])}; included in the latencies above</p>"
        )
    return "".join(parts)


def actions_section(document: Mapping[str, Any]) -> str:
    actions = document.get("actions", [])
    if not actions:
        return ""
    rows = []
    for action in actions:
        for window in action["windows"]:
            before, after = window["before"], window["after"]
            rows.append(
                [
                    f"{action['started_s']:.1f}s",
                    action["action"],
                    "ok" if action["ok"] else "FAILED",
                    window["target"],
                    _window_text(before),
                    _window_text(after),
                ]
            )
    head = f"Operator actions (±{actions[0]['window_s']:g}s around each)"
    details = "".join(f"<li>{escape(a['action'])}: {escape(a['detail'][:300])}</li>" for a in actions)
    return (
        f"<h2>{escape(head)}</h2>"
        + table(["at", "action", "outcome", "target", "before", "after"], rows, text=True)
        + f'<ul class="meta">{details}</ul>'
    )


def _window_text(window: Mapping[str, Any]) -> str:
    errors = sum(window["errors"].values())
    versions = " ".join(f"v{v}:{n}" for v, n in window["versions"].items())
    latency = f"p50 {fmt_ms(window['p50_ms'])}, p99 {fmt_ms(window['p99_ms'])}"
    return f"{window['requests']} req, {errors} err, {latency}; {versions}"


def render_run(document: Mapping[str, Any], title: str = "Load test") -> str:
    verdict, generator = document["verdict"], document["generator"]
    timing = document["timing"]
    no_gate = all(line.startswith("DONE") for line in verdict["lines"])
    body = [
        f"<h1>{escape(title)}</h1>",
        f'<p class="meta">{escape(document["url"])} · started {escape(document["started_at"])} · '
        f"{timing['duration_s']:g}s measured after {timing['warmup_s']:g}s warm-up · "
        f"{generator['workers']} worker(s), {generator['cpu_us_per_request']} µs generator CPU per request, "
        f"busy {generator['busy']:.0%}</p>",
        verdict_box(
            None if no_gate else verdict["passed"],
            "NO GATE" if no_gate else "PASS" if verdict["passed"] else "FAIL",
            verdict["lines"],
        ),
        actions_section(document),
    ]
    body += [target_section(target, document) for target in document["targets"]]
    return page(title, body)
