"""Issue 8's targets, judged on one bench run's own figures (printed; they do not set the exit code).

- mlp_small, batch 1, c=32 and c=64: ours >= 0.8 x the no-model server, and >= 2 x MLServer when measured;
- mlp_large, batch 1, c=32: ours >= 0.8 x min(no-model, raw ONNX Runtime's best batch, 1 thread);
- mlp_large, batch 8, c=32: ours (rows/s) >= 0.7 x raw's best batch rows/s;
- idle, batch 1, c=1: ours' p50 <= the no-model p50 + raw batch-1 p50 + 0.3 ms.
A target whose figures were not measured in this run (another model, batch or level) is left out.
"""

from __future__ import annotations

from collections.abc import Sequence

from loadtests.bench_table import MLSERVER, NO_MODEL, OURS, Block

IDLE_SLACK_S = 0.3e-3


def _rate(block: Block, label: str, concurrency: int) -> float | None:
    window = block.rows.get(label, {}).get(concurrency)
    return window.rows_per_s if window and window.latencies_s else None


def _raw_best(block: Block) -> float | None:
    return next((raw.best_rows_per_s for raw in block.raw if raw.threads == 1), None)


def _line(name: str, ours: float, floor: float, unit: str = "") -> str:
    verdict = "met" if ours >= floor else "NOT met"
    return f"  {name}: ours {ours:,.0f}{unit} vs needed {floor:,.0f}{unit}: {verdict}"


def _throughput(block: Block) -> list[str]:
    lines = []
    if block.model == "mlp_small" and block.batch == 1:
        for c in (32, 64):
            ours, ceiling = _rate(block, OURS, c), _rate(block, NO_MODEL, c)
            if ours is not None and ceiling is not None:
                lines.append(_line(f"mlp_small c={c} >= 0.8 x no-model", ours, 0.8 * ceiling))
            peer = _rate(block, MLSERVER, c)
            if ours is not None and peer is not None:
                lines.append(_line(f"mlp_small c={c} >= 2 x MLServer", ours, 2 * peer))
    ours, raw = _rate(block, OURS, 32), _raw_best(block)
    if block.model == "mlp_large" and ours is not None and raw is not None:
        if block.batch == 1:
            ceiling = _rate(block, NO_MODEL, 32)
            bound = raw if ceiling is None else min(raw, ceiling)
            lines.append(_line("mlp_large c=32 >= 0.8 x min(no-model, raw best)", ours, 0.8 * bound))
        elif block.batch == 8:
            lines.append(_line("mlp_large batch 8 c=32 >= 0.7 x raw best rows/s", ours, 0.7 * raw))
    return lines


def _idle(block: Block) -> list[str]:
    ours, ceiling = block.rows.get(OURS, {}).get(1), block.rows.get(NO_MODEL, {}).get(1)
    raw = next((raw for raw in block.raw if raw.threads == 1), None)
    if (
        block.batch != 1
        or not ours
        or not ceiling
        or not ours.latencies_s
        or not ceiling.latencies_s
        or not raw
    ):
        return []
    limit = ceiling.p50_s + raw.batch1_p50_s + IDLE_SLACK_S
    verdict = "met" if ours.p50_s <= limit else "NOT met"
    return [
        f"  {block.model} idle p50 <= no-model + raw batch 1 + 0.3 ms: ours {ours.p50_s * 1e3:.2f} ms "
        f"vs {limit * 1e3:.2f} ms: {verdict}"
    ]


def judge(blocks: Sequence[Block]) -> list[str]:
    lines = [line for block in blocks for line in _throughput(block) + _idle(block)]
    return ["", "issue 8 targets (this run's figures; noisy):", *lines] if lines else []
