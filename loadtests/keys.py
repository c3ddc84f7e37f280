"""Routing-key distributions: which user each request belongs to, for sticky A/B splits.

Spec strings:

    zipf:N:S     N keys ("user-1" … "user-N"); key k is drawn with probability ∝ 1/k**S (S > 0)
    uniform:N    N keys, equally likely

A key travels twice: as the request parameter ``routing_key`` (string) and as the gRPC metadata
``x-routing-key``. Draws come from a seeded numpy generator, refilled in blocks, so the hot path
pays one array read per request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

_SPEC = re.compile(r"^(zipf|uniform):(\d+)(?::(\d+(?:\.\d+)?|\.\d+))?$")
_BLOCK = 65536


class KeySpecError(ValueError):
    """A routing-key spec that does not parse."""


@dataclass(frozen=True)
class KeyDistribution:
    kind: str  # "zipf" | "uniform"
    n: int
    exponent: float = 0.0

    @property
    def text(self) -> str:
        return f"zipf:{self.n}:{self.exponent:g}" if self.kind == "zipf" else f"uniform:{self.n}"

    def key(self, index: int) -> str:
        return f"user-{index + 1}"

    def probabilities(self) -> np.ndarray:
        if self.kind == "uniform":
            return np.full(self.n, 1.0 / self.n)
        weights: np.ndarray = 1.0 / np.arange(1, self.n + 1, dtype=np.float64) ** self.exponent
        return weights / float(weights.sum())


def parse_keys(text: str) -> KeyDistribution:
    match = _SPEC.match(text.strip())
    if not match:
        raise KeySpecError(
            f"bad routing-key spec {text!r}: expected zipf:N:S or uniform:N, e.g. zipf:10000:1.1"
        )
    kind, n = match.group(1), int(match.group(2))
    if n < 1:
        raise KeySpecError(f"bad routing-key spec {text!r}: N must be at least 1")
    if kind == "zipf":
        if match.group(3) is None or float(match.group(3)) <= 0:
            raise KeySpecError(
                f"bad routing-key spec {text!r}: zipf needs an exponent S > 0, e.g. zipf:{n}:1.1"
            )
        return KeyDistribution(kind, n, float(match.group(3)))
    if match.group(3) is not None:
        raise KeySpecError(f"bad routing-key spec {text!r}: uniform takes only N")
    return KeyDistribution(kind, n)


class KeySampler:
    """Draws key indexes from a distribution, a block at a time."""

    def __init__(self, distribution: KeyDistribution, seed: int) -> None:
        self._rng = np.random.default_rng(seed)
        self._n = distribution.n
        self._cdf = np.cumsum(distribution.probabilities()) if distribution.kind == "zipf" else None
        self._block: list[int] = []
        self._next = 0

    def _refill(self) -> None:
        if self._cdf is None:
            draws = self._rng.integers(0, self._n, size=_BLOCK)
        else:
            draws = np.searchsorted(self._cdf, self._rng.random(_BLOCK) * self._cdf[-1], side="right")
            draws = np.minimum(draws, self._n - 1)
        self._block = draws.tolist()
        self._next = 0

    def next(self) -> int:
        if self._next >= len(self._block):
            self._refill()
        index = self._block[self._next]
        self._next += 1
        return index
