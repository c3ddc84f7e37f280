"""The bench's table: one block per (model, batch), rows = servers, columns = concurrency."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from loadtests.bench_client import Window
from loadtests.bench_raw import RawLimit

NO_MODEL = "no-model gRPC server (transport ceiling)"
OURS = "ours, dynamic batching (delay 500 us)"
OURS_NOBATCH = "ours, no dynamic_batching"
MLSERVER = "MLServer 1.7.1"
LABEL_WIDTH = 44


@dataclass
class Block:
    """Every figure for one model at one batch size."""

    model: str
    batch: int
    rows: dict[str, dict[int, Window]] = field(default_factory=dict)  # server label -> concurrency -> window
    raw: list[RawLimit] = field(default_factory=list)
    peer_label: str = ""  # the peer's best configuration, in words


def _number(value: float) -> str:
    return f"{value:,.0f}" if value == value else "-"


def _ratio(value: float) -> str:
    return f"{value:.2f}" if value == value else "-"


def _cells(values: Sequence[str], width: int = 9) -> str:
    return "".join(f"{value:>{width}}" for value in values)


def _row(label: str, windows: Mapping[int, Window], levels: Sequence[int]) -> str:
    figures = [_number(windows[c].rows_per_s) if c in windows else "-" for c in levels]
    first = windows.get(levels[0])
    p50 = f"{first.p50_s * 1e3:8.2f} ms" if first and first.latencies_s else "       -"
    return f"  {label:<{LABEL_WIDTH}}{_cells(figures)}{p50:>12}"


def _ratio_row(
    label: str, top: Mapping[int, Window], bottom: Mapping[int, Window], levels: Sequence[int]
) -> str:
    values = []
    for c in levels:
        if c in top and c in bottom and bottom[c].rows_per_s > 0:
            values.append(_ratio(top[c].rows_per_s / bottom[c].rows_per_s))
        else:
            values.append("-")
    return f"  {label:<{LABEL_WIDTH}}{_cells(values)}"


def _raw_lines(block: Block) -> list[str]:
    lines = []
    for raw in block.raw:
        threads = "thread" if raw.threads == 1 else "threads"
        lines.append(
            f"  raw ONNX Runtime in process, {raw.threads} {threads}: "
            f"batch 1 {_number(raw.batch1_rows_per_s)} rows/s"
            f" (p50 {raw.batch1_p50_s * 1e3:.3f} ms), best batch {raw.best_batch}: "
            f"{_number(raw.best_rows_per_s)} rows/s"
        )
    return lines


def render_block(block: Block, levels: Sequence[int]) -> list[str]:
    unit = "req/s" if block.batch == 1 else f"rows/s (req/s x {block.batch})"
    header = _cells([f"c={c}" for c in levels]) + f"{'p50 c=' + str(levels[0]):>12}"
    lines = [f"{block.model}, batch {block.batch} per request: {unit} at each concurrency"]
    lines.append(f"  {'':<{LABEL_WIDTH}}{header}")
    order = [NO_MODEL, MLSERVER, OURS, OURS_NOBATCH]
    for label in order:
        if label in block.rows:
            lines.append(_row(label, block.rows[label], levels))
            if label == MLSERVER and block.peer_label:
                lines.append(f"    (its best configuration: {block.peer_label})")
    ours = block.rows.get(OURS, {})
    if NO_MODEL in block.rows:
        lines.append(_ratio_row("ratio ours / no-model", ours, block.rows[NO_MODEL], levels))
    if MLSERVER in block.rows:
        lines.append(_ratio_row("ratio ours / MLServer", ours, block.rows[MLSERVER], levels))
    lines += _raw_lines(block)
    best = max((raw.best_rows_per_s for raw in block.raw if raw.threads == 1), default=0.0)
    if best and ours and max(window.rows_per_s for window in ours.values()) >= 0.01 * best:
        lines.append(
            _ratio_row("ratio ours / raw best batch (1 thread)", ours, _constant(best, levels), levels)
        )
    return lines


def _constant(rows_per_s: float, levels: Sequence[int]) -> dict[int, Window]:
    """A stand-in window whose rows/s is `rows_per_s` at every level (for a ratio row)."""
    windows = {}
    for c in levels:
        window = Window(c, 1, elapsed_s=1.0)
        window.latencies_s = [0.0] * round(rows_per_s)
        windows[c] = window
    return windows


def render(blocks: Sequence[Block], levels: Sequence[int], duration_s: float) -> list[str]:
    lines = [
        f"bench: {duration_s:g} s windows, one uvloop client in this process sharing the CPU; noisy: "
        "compare ratios within this run, not absolute figures"
    ]
    for block in blocks:
        lines.append("")
        lines += render_block(block, levels)
    return lines


def verification(blocks: Sequence[Block]) -> tuple[int, int, list[str]]:
    """(replies checked, errors, distinct problems) over every window of every block."""
    checked, errors, problems = 0, 0, []
    for block in blocks:
        for label, windows in block.rows.items():
            for window in windows.values():
                checked += window.checked
                errors += window.errors
                problems += [f"{label}: {problem}" for problem in window.wrong]
                if window.first_error:
                    problems.append(
                        f"{label} c={window.concurrency}: {window.errors} errors, first {window.first_error}"
                    )
    return checked, errors, sorted(set(problems))
