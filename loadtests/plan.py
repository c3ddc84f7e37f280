"""What to run: load shapes, targets (one model each), timing; and preparing targets against a server.

A TargetSpec is what the user asked for; ``prepare`` asks the server for each model's metadata and
turns it into a PreparedTarget: pre-serialised request bodies that worker processes can take.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import grpc

from loadtests.inputs import InputSpec, build_bodies
from loadtests.keys import KeyDistribution
from loadtests.slo import Slo
from loadtests.wire import TlsFiles, aio_channel, fetch_metadata


class PlanError(ValueError):
    """A run that cannot be set up (bad option, unknown model); the message says what to change."""


class ServerError(RuntimeError):
    """The server refused to describe a model (unreachable, unknown model): the run cannot happen."""


@dataclass(frozen=True)
class LoadShape:
    """Closed loop (``concurrency`` > 0) or open loop (``rate`` > 0, constant or Poisson)."""

    concurrency: int = 0
    rate: float = 0.0
    poisson: bool = False

    def __post_init__(self) -> None:
        if (self.concurrency > 0) == (self.rate > 0):
            raise PlanError("give exactly one of concurrency (closed loop) or rate (open loop), each > 0")

    @property
    def closed(self) -> bool:
        return self.concurrency > 0

    @property
    def level(self) -> float:
        return float(self.concurrency) if self.closed else self.rate

    def describe(self) -> str:
        if self.closed:
            return f"concurrency {self.concurrency}"
        return f"{'poisson' if self.poisson else 'constant'} rate {self.rate:g}/s"

    def at_level(self, level: float) -> LoadShape:
        if self.closed:
            return replace(self, concurrency=int(level))
        return replace(self, rate=float(level))

    def to_dict(self) -> dict[str, object]:
        if self.closed:
            return {"mode": "closed", "concurrency": self.concurrency}
        return {"mode": "open", "rate": self.rate, "poisson": self.poisson}


def worker_share(shape: LoadShape, worker: int, workers: int) -> tuple[int, float]:
    """(concurrency, rate) this worker drives; concurrency splits as evenly as integers allow."""
    if shape.closed:
        return shape.concurrency // workers + (1 if worker < shape.concurrency % workers else 0), 0.0
    return 0, shape.rate / workers


@dataclass(frozen=True)
class TargetSpec:
    model: str
    load: LoadShape
    version: str = ""  # "" = let the server route
    name: str = ""  # label in results; defaults to model or model:version
    batch: int = 1
    inputs: InputSpec = field(default_factory=InputSpec)
    keys: KeyDistribution | None = None
    timeout_s: float = 10.0
    slo: Slo | None = None
    expect_split: Mapping[str, float] | None = None

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        return f"{self.model}:{self.version}" if self.version else self.model

    def describe(self) -> dict[str, object]:
        return {
            "name": self.label,
            "model": self.model,
            "version": self.version or None,
            "load": self.load.to_dict(),
            "batch": self.batch,
            "inputs": self.inputs.source,
            "routing_keys": self.keys.text if self.keys else None,
            "timeout_s": self.timeout_s,
            "slo": self.slo.text if self.slo else None,
            "expect_split": dict(self.expect_split) if self.expect_split else None,
        }


@dataclass(frozen=True)
class PreparedTarget:
    """What a worker process needs for one target; picklable."""

    index: int
    spec: TargetSpec
    bodies: tuple[bytes, ...]


@dataclass(frozen=True)
class Timing:
    duration_s: float
    warmup_s: float = 1.0
    interval_s: float = 1.0

    def __post_init__(self) -> None:
        if self.duration_s <= 0 or self.warmup_s < 0 or self.interval_s <= 0:
            raise PlanError("duration and interval must be > 0 and warmup >= 0")


@dataclass(frozen=True)
class RunPlan:
    url: str
    targets: tuple[PreparedTarget, ...]
    timing: Timing
    workers: int = 1
    connections: int = 1
    seed: int = 0
    max_inflight: int = 10_000
    tls: TlsFiles | None = None  # None: plaintext

    def with_targets(self, targets: Sequence[PreparedTarget]) -> RunPlan:
        return replace(self, targets=tuple(targets))


async def prepare(
    url: str, specs: Sequence[TargetSpec], seed: int, tls: TlsFiles | None = None
) -> tuple[PreparedTarget, ...]:
    """Fetch each model's metadata and build its request bodies; PlanError when the server refuses."""
    channel = aio_channel(url, tls=tls)
    try:
        prepared = []
        for index, spec in enumerate(specs):
            try:
                meta = await fetch_metadata(channel, spec.model, spec.version)
            except grpc.aio.AioRpcError as err:
                raise ServerError(
                    f"ModelMetadata for {spec.label!r} at {url} failed: {err.code().name}: {err.details()}"
                ) from None
            bodies = build_bodies(
                replace(meta, name=spec.model), spec.version, spec.batch, spec.inputs, seed + index
            )
            prepared.append(PreparedTarget(index, spec, tuple(bodies)))
        return tuple(prepared)
    finally:
        await channel.close()
