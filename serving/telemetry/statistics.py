"""Per-version inference statistics in Triton's shape, served by the ModelStatistics RPC.

perf_analyzer reads these to print its "Server" block (queue, compute input/infer/output), so the
counting rules are Triton's: `inference_count` counts rows, `execution_count` batches; the
`success`, `queue` and `compute_*` durations are counted once per successful request (a request
is charged the compute time of the batch it ran in); `batch_stats` count batches per batch size.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

from serving.backends.base import ComputeTimings


@dataclass
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns


@dataclass
class BatchSizeStats:
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


@dataclass
class StatsSnapshot:
    last_inference_ms: int
    inference_count: int
    execution_count: int
    success: Duration
    fail: Duration
    queue: Duration
    compute_input: Duration
    compute_infer: Duration
    compute_output: Duration
    batch_stats: dict[int, BatchSizeStats]


class VersionStats:
    """Thread-safe counters for one model version; batches finish on worker threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_inference_ms = 0
        self._inference_count = 0
        self._execution_count = 0
        self._success = Duration()
        self._fail = Duration()
        self._queue = Duration()
        self._input = Duration()
        self._infer = Duration()
        self._output = Duration()
        self._batches: dict[int, BatchSizeStats] = defaultdict(BatchSizeStats)

    def batch_executed(self, rows: int, timings: ComputeTimings) -> None:
        with self._lock:
            self._execution_count += 1
            self._inference_count += rows
            self._last_inference_ms = int(time.time() * 1000)
            batch = self._batches[rows]
            batch.compute_input.add(timings.input_ns)
            batch.compute_infer.add(timings.infer_ns)
            batch.compute_output.add(timings.output_ns)

    def request_succeeded(self, total_ns: int, queue_ns: int, timings: ComputeTimings) -> None:
        with self._lock:
            self._success.add(total_ns)
            self._queue.add(queue_ns)
            self._input.add(timings.input_ns)
            self._infer.add(timings.infer_ns)
            self._output.add(timings.output_ns)

    def request_failed(self, total_ns: int) -> None:
        with self._lock:
            self._fail.add(total_ns)

    def snapshot(self) -> StatsSnapshot:
        def copy(d: Duration) -> Duration:
            return Duration(d.count, d.ns)

        with self._lock:
            return StatsSnapshot(
                last_inference_ms=self._last_inference_ms,
                inference_count=self._inference_count,
                execution_count=self._execution_count,
                success=copy(self._success),
                fail=copy(self._fail),
                queue=copy(self._queue),
                compute_input=copy(self._input),
                compute_infer=copy(self._infer),
                compute_output=copy(self._output),
                batch_stats={
                    size: BatchSizeStats(copy(b.compute_input), copy(b.compute_infer), copy(b.compute_output))
                    for size, b in sorted(self._batches.items())
                },
            )
