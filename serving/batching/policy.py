"""When a batch goes: Triton's dynamic-batching settings and the pure decision made from them.

`choose_batch`: requests are gathered FIFO while every input has the first request's non-batch shape and
dtype and the rows stay ≤ max_batch_size; the first request that does not fit closes the batch (no
reordering past it). The gathered batch is dispatched at once when it is full (max_batch_size rows), when
its rows are a preferred size, when some request boundary inside it reaches a preferred size (the largest
such prefix goes; the rest waits), or when it cannot grow (the next queued request does not fit).
Otherwise it waits until its oldest request has been queued max_queue_delay_s (0 = dispatch at once).

Work-conserving (the default): the caller (serving/batching/batcher.py) only asks while an instance is
free, and treats the delay as expired at once, unless a preferred size is within reach: the rows
expected to arrive before the oldest request's delay ends (at the recent arrival rate) would take the
batch up to the next preferred size (`preferred_within_reach`). While every instance is busy requests
queue up anyway, so a batch still fills under load, and a free instance never idles beside a queue.
Triton's fixed delay (`strict_delay`, config.pbtxt parameter `batching.strict_delay: "true"`): a batch
that is neither full nor preferred waits out max_queue_delay_s even when an instance is idle.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class BatchingPolicy:
    """Triton's dynamic_batching settings for one model version (times in seconds)."""

    max_batch_size: int  # rows; 0 = the model does not batch: each request runs alone, as is
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_s: float = 0.0  # how long the OLDEST queued request may wait for a fuller batch
    max_queue_size: int = 0  # queued (not yet running) requests; 0 = unbounded
    default_timeout_s: float | None = None  # queue timeout (Triton default_timeout_microseconds)
    allow_timeout_override: bool = False  # a request may shorten its queue timeout (never extend it)
    strict_delay: bool = False  # Triton's fixed delay: wait it out even when an instance is idle

    def __post_init__(self) -> None:
        if self.max_batch_size < 0:
            raise ValueError(f"max_batch_size must be >= 0, got {self.max_batch_size}")
        for size in self.preferred_batch_sizes:
            if size <= 0:
                raise ValueError(f"preferred_batch_sizes must be positive, got {size}")
            if size > self.max_batch_size:
                raise ValueError(
                    f"preferred_batch_sizes entry {size} exceeds max_batch_size {self.max_batch_size}"
                )
        if len(set(self.preferred_batch_sizes)) != len(self.preferred_batch_sizes):
            raise ValueError(f"preferred_batch_sizes has duplicates: {self.preferred_batch_sizes}")
        if not (self.max_queue_delay_s >= 0 and math.isfinite(self.max_queue_delay_s)):
            raise ValueError(f"max_queue_delay_s must be finite and >= 0, got {self.max_queue_delay_s}")
        if self.max_queue_size < 0:
            raise ValueError(f"max_queue_size must be >= 0 (0 = unbounded), got {self.max_queue_size}")
        if self.default_timeout_s is not None and not self.default_timeout_s > 0:
            raise ValueError(f"default_timeout_s must be > 0 or None, got {self.default_timeout_s}")

    @property
    def batching(self) -> bool:
        return self.max_batch_size > 0

    def queue_timeout(self, requested_s: float | None) -> float | None:
        """One request's queue timeout, as Triton's PriorityQueue: the request's own (None or 0 = not
        set) counts only with allow_timeout_override, and only to shorten the default, never extend it."""
        if requested_s and self.allow_timeout_override:
            return min(requested_s, self.default_timeout_s or math.inf)
        return self.default_timeout_s


def choose_batch(
    row_counts: Sequence[int], policy: BatchingPolicy, *, can_grow: bool, timer_expired: bool
) -> int:
    """How many of the gathered requests (FIFO, compatible, ≤ max rows) to dispatch now; 0 = wait."""
    total = sum(row_counts)
    preferred = policy.preferred_batch_sizes
    if total >= policy.max_batch_size or total in preferred:
        return len(row_counts)
    best = 0
    for count, rows in enumerate(itertools.accumulate(row_counts), start=1):
        if rows in preferred:
            best = count
    if best:
        return best
    return len(row_counts) if timer_expired or not can_grow else 0


def preferred_within_reach(rows: int, preferred: Sequence[int], expected_rows: float) -> bool:
    """Whether `expected_rows` more rows (the arrivals expected while the delay lasts) would take a batch
    of `rows` rows up to a preferred size it has not reached yet."""
    gaps = [size - rows for size in preferred if size > rows]
    return bool(gaps) and min(gaps) <= expected_rows
