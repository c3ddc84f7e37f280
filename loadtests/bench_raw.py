"""The bench's raw limit: the ONNX file run in this process by ONNX Runtime, no server in between.

For 1 and 2 intra-op threads: batch-1 rows/s and latency, and the best rows/s over batch sizes up to
256 (the throughput ceiling a batching server could reach with that many threads). It also gives the
expected outputs the bench checks replies against.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

BATCHES = (1, 8, 16, 32, 64, 128, 256)


@dataclass(frozen=True)
class RawLimit:
    threads: int
    batch1_rows_per_s: float
    batch1_p50_s: float
    best_batch: int
    best_rows_per_s: float


def session(model_file: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])


def run_rows(sess: Any, rows: np.ndarray) -> np.ndarray:
    inputs = sess.get_inputs()
    return np.asarray(sess.run(None, {inputs[0].name: rows})[0])


def time_calls(sess: Any, rows: np.ndarray, duration_s: float) -> tuple[float, float]:
    """(rows per second, median seconds per call) of back-to-back calls."""
    run_rows(sess, rows)  # warm-up
    latencies: list[float] = []
    end = time.perf_counter() + duration_s
    while time.perf_counter() < end or not latencies:
        started = time.perf_counter()
        run_rows(sess, rows)
        latencies.append(time.perf_counter() - started)
    return len(latencies) * rows.shape[0] / sum(latencies), float(np.median(latencies))


def raw_limit(
    model_file: Path, width: int, threads: int, duration_s: float, batches: Sequence[int] = BATCHES
) -> RawLimit:
    sess = session(model_file, threads)
    data = np.random.default_rng(threads).standard_normal((max(batches), width)).astype(np.float32)
    per_batch = max(0.05, duration_s / len(batches))
    figures = {batch: time_calls(sess, data[:batch], per_batch) for batch in batches}
    best = max(figures, key=lambda batch: figures[batch][0])
    return RawLimit(threads, figures[1][0], figures[1][1], best, figures[best][0])


def expected_outputs(model_file: Path, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """What ONNX Runtime (one thread) gives for each request's rows: the replies' yardstick."""
    sess = session(model_file, 1)
    return [run_rows(sess, rows) for rows in inputs]
