"""One loaded version of a model: its instances, its batcher, its state and its statistics.

Life of a version: LOADING (backends load on a worker thread) → WARMING (the warm-up samples of
serving/lifecycle/warmup.py run on every instance and their outputs are checked against the config)
→ READY (takes traffic) → DRAINING (no new requests; queued and running ones finish) → UNLOADED.
A failure while loading or warming ends in FAILED with the reason; such a version never takes
traffic. The registry lists a version from the moment it is built (LOADING), but routes requests
only to READY ones.

A version reports its events to its `VersionObserver` (serving/telemetry/observer.py), which reads the
version through the `ObservedVersion` protocol: telemetry does not import this module.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from serving.backends.base import Backend, Placement
from serving.batching.batcher import BatchingPolicy, DynamicBatcher
from serving.core.request import InferenceRequest
from serving.errors import ModelConfigError, ServingError, Unavailable
from serving.lifecycle.repository import BackendLoader, ModelSpec, VersionSource
from serving.lifecycle.state import VersionState
from serving.lifecycle.warmup import default_sample
from serving.parameters import flag
from serving.telemetry.observer import Telemetry
from serving.telemetry.statistics import VersionStats
from serving.types import Array

log = logging.getLogger("serving.lifecycle")

__all__ = ["BackendLoader", "ModelVersion", "VersionState", "batching_policy"]


STRICT_DELAY_PARAMETER = "batching.strict_delay"  # "true": Triton's fixed delay (not work-conserving)
INLINE_PARAMETER = "batching.inline_below_us"  # run batches on the event loop below this batch time
DEFAULT_INLINE_BELOW_US = 200  # docs/performance.md: the measurement behind it


def batching_policy(spec: ModelSpec, default_max_queue_size: int = 0) -> BatchingPolicy:
    """Dynamic batching as config.pbtxt asks; without `dynamic_batching` every request runs alone.
    A config without max_queue_size gets the server's `default_max_queue_size` (0 = unbounded).
    ModelConfigError for a malformed `batching.*` parameter."""
    db = spec.dynamic_batching
    strict = flag(spec.parameters, STRICT_DELAY_PARAMETER, f"model '{spec.name}'")
    if db is None:
        return BatchingPolicy(max_batch_size=0)
    return BatchingPolicy(
        strict_delay=strict,
        max_batch_size=spec.max_batch_size,
        preferred_batch_sizes=db.preferred_batch_sizes,
        max_queue_delay_s=db.max_queue_delay_s,
        max_queue_size=db.queue.max_queue_size or default_max_queue_size,
        default_timeout_s=db.queue.default_timeout_s,
        allow_timeout_override=db.queue.allow_timeout_override,
    )


def inline_below_s(spec: ModelSpec) -> float:
    """Batches whose measured wall time is below this run on the event loop (0: never); ModelConfigError."""
    text = spec.parameters.get(INLINE_PARAMETER, str(DEFAULT_INLINE_BELOW_US)).strip()
    if not text.isdigit():
        raise ModelConfigError(
            f"model '{spec.name}': parameter '{INLINE_PARAMETER}' must be a whole number of microseconds "
            f"(0 = never inline), got {text!r}"
        )
    return int(text) / 1e6


class ModelVersion:
    def __init__(
        self,
        spec: ModelSpec,
        source: VersionSource,
        placements: Sequence[Placement],
        telemetry: Telemetry | None = None,
        *,
        default_max_queue_size: int = 0,
    ) -> None:
        self.spec = spec
        self._default_max_queue_size = default_max_queue_size
        self.source = source
        self.version = source.version
        self.placements = tuple(placements)
        self.state = VersionState.LOADING
        self.reason = ""
        self.stats = VersionStats()
        # Feeds self.stats (ModelStatistics) and, with the server's Telemetry, /metrics and drift.
        self.observer = (telemetry or Telemetry()).observer_for(self)
        self.load_seconds = 0.0
        self.file_mtime_ns = source.model_file.stat().st_mtime_ns
        self._backends: list[Backend] = []
        self._batcher: DynamicBatcher | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def platform(self) -> str:
        return self.source.platform

    @property
    def ready(self) -> bool:
        return self.state is VersionState.READY

    @property
    def healthy(self) -> bool:
        """False while its batches keep failing (serving/batching/retry.py); ModelReady reports it."""
        return self._batcher.healthy if self._batcher else True

    @property
    def queue_depth(self) -> int:
        return self._batcher.queue_depth if self._batcher else 0

    @property
    def in_flight(self) -> int:
        return self._batcher.in_flight if self._batcher else 0

    @property
    def queue_capacity(self) -> int:
        """The batcher's max queue size; 0 = unbounded."""
        batching = self.spec.dynamic_batching
        if batching is None:
            return 0
        return batching.queue.max_queue_size or self._default_max_queue_size

    @property
    def parameters(self) -> Mapping[str, str]:
        return self.spec.parameters

    @property
    def folder(self) -> Path:
        return self.source.path

    def describe(self) -> str:
        return f"{self.name} v{self.version}"

    async def load(self, loader: BackendLoader) -> None:
        """Load every instance, warm each up, then start the batcher; ends READY or FAILED."""
        started = time.perf_counter()
        try:
            self.observer.started()
            policy = batching_policy(self.spec, self._default_max_queue_size)  # bad parameters fail first
            inline = inline_below_s(self.spec)
            for placement in self.placements:
                backend = await asyncio.to_thread(loader, self.source, self.spec, placement)
                self._backends.append(backend)
                log.info(
                    "%s: instance on %s loaded from %s",
                    self.describe(),
                    placement.device,
                    self.source.model_file,
                )
            self.state = VersionState.WARMING
            for backend in self._backends:
                await asyncio.to_thread(self._warm_up, backend)
            self._batcher = DynamicBatcher(
                self._backends,
                policy,
                observer=self.observer,
                name=self.describe(),
                inline_below_s=inline,
            )
            await self._batcher.start()
        except Exception as exc:  # any failure, including the framework's own, fails this version only
            self._fail(exc)
            return
        self.load_seconds = time.perf_counter() - started
        self.state = VersionState.READY
        self.observer.loaded(self.load_seconds)
        devices = ", ".join(p.device for p in self.placements)
        log.info(
            "%s: READY on [%s] (%s) in %.2fs", self.describe(), devices, self.platform, self.load_seconds
        )

    def _fail(self, exc: Exception) -> None:
        self.state = VersionState.FAILED
        self.reason = str(exc) if isinstance(exc, ServingError) else f"{type(exc).__name__}: {exc}"
        log.error("%s: FAILED: %s", self.describe(), self.reason)
        self._close_backends()
        self.observer.failed()

    def _warm_up(self, backend: Backend) -> None:
        """Run every warm-up sample `count` times; a failure names the sample and its inputs."""
        samples = self.spec.warmup or (default_sample(self.spec.inputs, self.spec.max_batch_size),)
        for sample in samples:
            inputs = sample.arrays()
            for _ in range(sample.count):
                try:
                    result = backend.infer(inputs)
                except Exception as exc:
                    raise ModelConfigError(f"{self.source.model_file}: {sample.describe()}: {exc}") from exc
                missing = [t.name for t in self.spec.outputs if t.name not in result.outputs]
                if missing:
                    raise ModelConfigError(
                        f"{self.source.model_file}: {sample.describe()} produced outputs "
                        f"{sorted(result.outputs)}, but config.pbtxt declares {missing}"
                    )
            log.info("%s: %s ran %d time(s)", self.describe(), sample.describe(), sample.count)

    async def infer(
        self, request: InferenceRequest, deadline: float | None, timeout_s: float | None
    ) -> dict[str, Array]:
        """Run one validated request through the batcher; records statistics either way."""
        batcher = self._batcher
        if batcher is None or self.state is not VersionState.READY:
            raise Unavailable(f"model '{self.name}' version {self.version} is not ready ({self.state.value})")
        started = time.perf_counter_ns()
        try:
            result = await batcher.infer(request.inputs, deadline=deadline, timeout_s=timeout_s)
        except BaseException:
            self.observer.request_failed(time.perf_counter_ns() - started)
            raise
        self.observer.request_succeeded(time.perf_counter_ns() - started, result)
        wanted = request.requested_outputs
        if not wanted:
            return result.outputs
        return {k: v for k, v in result.outputs.items() if k in wanted}

    async def drain_and_unload(self) -> None:
        """Stop taking requests, let every queued and running one finish, then release the model."""
        if self.state in (VersionState.UNLOADED, VersionState.FAILED):
            return
        self.state = VersionState.DRAINING
        log.info("%s: DRAINING (%d queued, %d running)", self.describe(), self.queue_depth, self.in_flight)
        if self._batcher is not None:
            await self._batcher.close()
        self._close_backends()
        self.state = VersionState.UNLOADED
        self.observer.unloaded()
        log.info("%s: UNLOADED", self.describe())

    def _close_backends(self) -> None:
        for backend in self._backends:
            try:
                backend.close()
            except Exception:  # closing must not stop the others from closing
                log.exception("%s: closing an instance failed", self.describe())
        self._backends.clear()
