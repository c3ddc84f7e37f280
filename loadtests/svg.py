"""Small inline-SVG charts for the HTML report: no plotting library, no scripts, works offline.

``line_chart`` draws lines (or a stacked area) with nice axis ticks, a legend, vertical markers
(operator actions) and optional custom x ticks (the percentile axis); ``bar_chart`` draws bars with
confidence-interval whiskers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from html import escape

PALETTE = ("#2563eb", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#0ea5e9", "#f97316", "#64748b")
Point = tuple[float, float | None]


@dataclass(frozen=True)
class Series:
    name: str
    points: Sequence[Point]
    color: str = PALETTE[0]
    dashed: bool = False
    width: float = 2.0


@dataclass(frozen=True)
class Marker:
    x: float
    label: str
    color: str = "#6b7280"


@dataclass(frozen=True)
class Axes:
    title: str
    x_label: str
    y_label: str
    width: int = 760
    height: int = 280
    x_format: Callable[[float], str] = field(default=lambda v: f"{v:g}")
    y_format: Callable[[float], str] = field(default=lambda v: f"{v:g}")
    x_ticks: Sequence[tuple[float, str]] | None = None
    y_max: float | None = None
    stacked: bool = False


MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 64, 16, 34, 54


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    if not math.isfinite(low) or not math.isfinite(high) or high <= low:
        return [low] if math.isfinite(low) else [0.0]
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    return [round(first + i * step, 10) for i in range(int((high - first) / step + 1e-9) + 1)]


class _Frame:
    def __init__(self, axes: Axes, x_range: tuple[float, float], y_range: tuple[float, float]) -> None:
        self.axes = axes
        self.x0, self.x1 = x_range
        self.y0, self.y1 = y_range
        self.left, self.top = MARGIN_L, MARGIN_T
        self.w = axes.width - MARGIN_L - MARGIN_R
        self.h = axes.height - MARGIN_T - MARGIN_B

    def px(self, x: float) -> float:
        span = (self.x1 - self.x0) or 1.0
        return self.left + (x - self.x0) / span * self.w

    def py(self, y: float) -> float:
        span = (self.y1 - self.y0) or 1.0
        return self.top + self.h - (min(y, self.y1) - self.y0) / span * self.h


def _text(
    x: float, y: float, content: str, fill: str = "#4b5563", anchor: str = "start", extra: str = ""
) -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" fill="{fill}"{extra}>{escape(content)}</text>'
    )


def _line(x1: float, x2: float, y1: float, y2: float, stroke: str, extra: str = "", title: str = "") -> str:
    inner = f"<title>{escape(title)}</title></line>" if title else "/>"
    head = f'<line x1="{x1:.1f}" x2="{x2:.1f}" y1="{y1:.1f}" y2="{y2:.1f}" stroke="{stroke}"{extra}'
    return head + (">" + inner if title else inner)


def _open(axes: Axes) -> list[str]:
    return [
        f'<svg class="chart" viewBox="0 0 {axes.width} {axes.height}" width="100%" role="img" '
        f'xmlns="http://www.w3.org/2000/svg" font-family="system-ui, sans-serif" font-size="11">',
        f"<title>{escape(axes.title)}</title>",
        _text(MARGIN_L, 18, axes.title, "#111827", extra=' font-size="13" font-weight="600"'),
    ]


def _grid(frame: _Frame) -> list[str]:
    axes, parts = frame.axes, []
    right, bottom = frame.left + frame.w, frame.top + frame.h
    for y in nice_ticks(frame.y0, frame.y1):
        py = frame.py(y)
        parts.append(_line(frame.left, right, py, py, "#e5e7eb"))
        parts.append(_text(frame.left - 6, py + 4, axes.y_format(y), anchor="end"))
    x_ticks = axes.x_ticks or [(x, axes.x_format(x)) for x in nice_ticks(frame.x0, frame.x1, 8)]
    for x, label in x_ticks:
        if frame.x0 - 1e-9 <= x <= frame.x1 + 1e-9:
            px = frame.px(x)
            parts.append(_line(px, px, frame.top, bottom, "#f3f4f6"))
            parts.append(_text(px, bottom + 15, label, anchor="middle"))
    parts.append(
        f'<rect x="{frame.left}" y="{frame.top}" width="{frame.w}" height="{frame.h}" '
        'fill="none" stroke="#9ca3af"/>'
    )
    parts.append(_text(frame.left + frame.w / 2, axes.height - 20, axes.x_label, "#374151", "middle"))
    middle = frame.top + frame.h / 2
    parts.append(
        f'<text transform="translate(14 {middle:.1f}) rotate(-90)" text-anchor="middle" fill="#374151">'
        f"{escape(axes.y_label)}</text>"
    )
    return parts


def _path(frame: _Frame, points: Sequence[Point]) -> str:
    commands, pen_down = [], False
    for x, y in points:
        if y is None or not math.isfinite(y):
            pen_down = False
            continue
        commands.append(f"{'L' if pen_down else 'M'}{frame.px(x):.1f},{frame.py(y):.1f}")
        pen_down = True
    return " ".join(commands)


def _legend(axes: Axes, series: Sequence[Series]) -> list[str]:
    parts, x = [], axes.width - MARGIN_R
    for s in reversed(series):
        x -= 14 + 7 * len(s.name) + 12
        parts.append(f'<rect x="{x}" y="9" width="10" height="10" fill="{s.color}" rx="2"/>')
        parts.append(f'<text x="{x + 14}" y="18" fill="#374151">{escape(s.name)}</text>')
    return parts


def _markers(frame: _Frame, markers: Sequence[Marker]) -> list[str]:
    parts = []
    for i, m in enumerate(markers):
        if not frame.x0 <= m.x <= frame.x1:
            continue
        px = frame.px(m.x)
        parts.append(
            _line(px, px, frame.top, frame.top + frame.h, m.color, ' stroke-dasharray="4 3"', m.label)
        )
        parts.append(_text(px + 3, frame.top + 12 + 12 * (i % 3), m.label[:40], m.color))
    return parts


def _ranges(series: Sequence[Series], axes: Axes) -> tuple[tuple[float, float], tuple[float, float]]:
    xs = [x for s in series for x, _ in s.points]
    ys = [y for s in series for _, y in s.points if y is not None and math.isfinite(y)]
    x_range = (min(xs), max(xs)) if xs else (0.0, 1.0)
    if axes.x_ticks:
        x_range = (min(x_range[0], axes.x_ticks[0][0]), max(x_range[1], axes.x_ticks[-1][0]))
    top = axes.y_max if axes.y_max is not None else (max(ys) * 1.08 if ys and max(ys) > 0 else 1.0)
    return x_range, (0.0, top)


def line_chart(series: Sequence[Series], axes: Axes, markers: Sequence[Marker] = ()) -> str:
    drawn = [s for s in series if s.points]
    if not drawn:
        return f'<p class="empty">{escape(axes.title)}: no data</p>'
    x_range, y_range = _ranges(drawn, axes)
    frame = _Frame(axes, x_range, y_range)
    parts = _open(axes) + _grid(frame)
    for s in drawn:
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        parts.append(
            f'<path d="{_path(frame, s.points)}" fill="none" stroke="{s.color}" stroke-width="{s.width}"'
            f' stroke-linejoin="round"{dash}><title>{escape(s.name)}</title></path>'
        )
    parts += _markers(frame, markers) + _legend(axes, drawn) + ["</svg>"]
    return "\n".join(parts)


def stacked_area(
    xs: Sequence[float],
    layers: Sequence[tuple[str, Sequence[float]]],
    axes: Axes,
    markers: Sequence[Marker] = (),
) -> str:
    """Layers of shares (0..1) stacked bottom-up at each x."""
    if not xs or not layers:
        return f'<p class="empty">{escape(axes.title)}: no data</p>'
    frame = _Frame(axes, (min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1), (0.0, 1.0))
    parts = _open(axes) + _grid(frame)
    base = [0.0] * len(xs)
    legend = []
    for i, (name, values) in enumerate(layers):
        color = PALETTE[i % len(PALETTE)]
        top = [b + v for b, v in zip(base, values, strict=True)]
        upper = " ".join(f"{frame.px(x):.1f},{frame.py(y):.1f}" for x, y in zip(xs, top, strict=True))
        lower = " ".join(
            f"{frame.px(x):.1f},{frame.py(y):.1f}" for x, y in reversed(list(zip(xs, base, strict=True)))
        )
        parts.append(
            f'<polygon points="{upper} {lower}" fill="{color}" fill-opacity="0.75">'
            f"<title>{escape(name)}</title></polygon>"
        )
        legend.append(Series(name, [(0.0, 0.0)], color))
        base = top
    parts += _markers(frame, markers) + _legend(axes, legend) + ["</svg>"]
    return "\n".join(parts)


def bar_chart(
    bars: Sequence[tuple[str, float, float, float]], axes: Axes, targets: Sequence[float | None] = ()
) -> str:
    """Bars (label, value, low, high) with whiskers at [low, high]; an optional dashed target line per bar."""
    if not bars:
        return f'<p class="empty">{escape(axes.title)}: no data</p>'
    top = axes.y_max if axes.y_max is not None else max(b[3] for b in bars) * 1.1 or 1.0
    ticks = [(i + 0.5, label) for i, (label, *_rest) in enumerate(bars)]
    axes = replace(axes, x_ticks=ticks, y_max=top)
    frame = _Frame(axes, (0.0, float(len(bars))), (0.0, top))
    parts = _open(axes) + _grid(frame)
    slot = frame.w / len(bars)
    for i, (label, value, low, high) in enumerate(bars):
        x = frame.left + i * slot + slot * 0.25
        parts.append(
            f'<rect x="{x:.1f}" y="{frame.py(value):.1f}" width="{slot * 0.5:.1f}" '
            f'height="{frame.top + frame.h - frame.py(value):.1f}" fill="{PALETTE[i % len(PALETTE)]}" rx="3">'
            f"<title>{escape(label)}: {value:.4g} [{low:.4g}, {high:.4g}]</title></rect>"
        )
        cx = x + slot * 0.25
        whisker = ' stroke-width="1.5"'
        parts.append(_line(cx, cx, frame.py(low), frame.py(high), "#111827", whisker))
        for y in (low, high):
            parts.append(_line(cx - 6, cx + 6, frame.py(y), frame.py(y), "#111827", whisker))
        target = targets[i] if i < len(targets) else None
        if target is not None:
            parts.append(
                f'<line x1="{x - 4:.1f}" x2="{x + slot * 0.5 + 4:.1f}" y1="{frame.py(target):.1f}" '
                f'y2="{frame.py(target):.1f}" stroke="#dc2626" stroke-dasharray="5 3" stroke-width="2">'
                f"<title>expected {target:.4g}</title></line>"
            )
    parts.append("</svg>")
    return "\n".join(parts)
