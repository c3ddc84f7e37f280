"""Live progress: a rich panel in a terminal, one line per interval in a log, or nothing.

Figures are those of the last finished interval (rate, p50, p99) and running totals (ok, errors),
per target, plus the actions done so far.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from loadtests.actions import ActionRecord
from loadtests.runner import NoProgress, Progress
from loadtests.timeline import TargetResult, Timeline
from loadtests.units import format_latency, format_rate

MODES = ("auto", "rich", "lines", "none")


def make_progress(mode: str, stream: TextIO | None = None) -> Progress:
    stream = stream or sys.stderr
    if mode == "auto":
        mode = "rich" if stream.isatty() else "none"
    if mode == "rich":
        return RichProgress(Console(file=stream))
    if mode == "lines":
        return LineProgress(stream)
    return NoProgress()


def _last_full_interval(target: TargetResult, elapsed_s: float) -> int:
    return int(elapsed_s // target.interval_s) - 1


def _figures(target: TargetResult, index: int) -> tuple[str, str, str, str, str]:
    stats = target.intervals.get(index)
    total_ok = sum(s.ok for s in target.intervals.values())
    total_err = sum(s.failed for s in target.intervals.values())
    if stats is None:
        return "-", "-", "-", str(total_ok), str(total_err)
    rate = format_rate(stats.completed / target.interval_s)
    return (
        rate,
        format_latency(stats.latency.percentile(50)),
        format_latency(stats.latency.percentile(99)),
        str(total_ok),
        str(total_err),
    )


def _versions(target: TargetResult, index: int) -> str:
    stats = target.intervals.get(index)
    if stats is None or not stats.versions:
        return "-"
    total = sum(stats.versions.values())
    return " ".join(f"v{v}:{n / total:.0%}" for v, n in sorted(stats.versions.items()))


class RichProgress:
    def __init__(self, console: Console) -> None:
        self._console = console
        self._live: Live | None = None
        self._timeline: Timeline | None = None
        self._zero = 0.0
        self._warmup = 0.0
        self._duration = 0.0
        self._actions: list[ActionRecord] = []
        self._last_draw = 0.0

    def started(self, timeline: Timeline, zero: float, warmup_s: float, duration_s: float) -> None:
        self._timeline, self._zero, self._warmup, self._duration = timeline, zero, warmup_s, duration_s
        self._live = Live(self._render(), console=self._console, refresh_per_second=4, transient=False)
        self._live.start()

    def updated(self) -> None:
        now = time.monotonic()
        if self._live is not None and now - self._last_draw >= 0.25:
            self._last_draw = now
            self._live.update(self._render())

    def action_done(self, record: ActionRecord) -> None:
        self._actions.append(record)
        self.updated()

    def finished(self) -> None:
        if self._live is not None:
            self._live.update(self._render())
            self._live.stop()
            self._live = None

    def _render(self) -> Group:
        elapsed = time.monotonic() - self._zero
        head = Text()
        if elapsed < 0:
            head.append(f"warming up … {-elapsed:.1f}s", style="yellow")
        else:
            done = min(1.0, elapsed / self._duration)
            bar = "█" * int(done * 30) + "░" * (30 - int(done * 30))
            head.append(f"{bar} {min(elapsed, self._duration):5.1f}s / {self._duration:g}s", style="cyan")
        table = Table(box=None, header_style="bold")
        for column in ("target", "load", "rate", "p50", "p99", "ok", "errors", "versions"):
            table.add_column(column, justify="left" if column in ("target", "load", "versions") else "right")
        for target in self._timeline.targets if self._timeline else []:
            index = _last_full_interval(target, elapsed)
            rate, p50, p99, ok, errors = _figures(target, index)
            table.add_row(
                target.spec.label,
                target.spec.load.describe(),
                rate,
                p50,
                p99,
                ok,
                Text(errors, style="red" if errors != "0" else ""),
                _versions(target, index),
            )
        lines = [
            Text(
                f"{'✓' if a.ok else '✗'} {a.started_s:5.1f}s {a.description}: {a.detail[:80]}",
                style="green" if a.ok else "red",
            )
            for a in self._actions
        ]
        return Group(head, table, *lines)


class LineProgress:
    """One line per finished interval and per action, for logs."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._timeline: Timeline | None = None
        self._zero = 0.0
        self._printed = -1

    def started(self, timeline: Timeline, zero: float, warmup_s: float, duration_s: float) -> None:
        self._timeline, self._zero = timeline, zero

    def updated(self) -> None:
        if self._timeline is None or not self._timeline.targets:
            return
        index = _last_full_interval(self._timeline.targets[0], time.monotonic() - self._zero)
        while self._printed < index:
            self._printed += 1
            self._print(self._printed)

    def _print(self, index: int) -> None:
        assert self._timeline is not None
        for target in self._timeline.targets:
            rate, p50, p99, ok, errors = _figures(target, index)
            t = index * target.interval_s
            print(
                f"t={t:6.1f}s {target.spec.label}: {rate} p50 {p50} p99 {p99} ok {ok} errors {errors} "
                f"{_versions(target, index)}",
                file=self._stream,
                flush=True,
            )

    def action_done(self, record: ActionRecord) -> None:
        print(
            f"t={record.started_s:6.1f}s action {record.description}: {'ok' if record.ok else 'FAILED'} "
            f"{record.detail[:200]}",
            file=self._stream,
            flush=True,
        )

    def finished(self) -> None:
        pass
