"""`AdmissionGate`: the calls the server has accepted, shared by the gRPC handlers and the HTTP front end.

Every call that reaches our code (its gRPC handler, serving/api/calls.py; the route for HTTP) enters
the gate first and leaves it when its reply is sent. The gate refuses, before any decoding:
  - while draining (SIGTERM): Unavailable → UNAVAILABLE / 503, so clients retry elsewhere;
  - an inference call beyond `max_concurrent` inference calls in flight: QueueFull →
    RESOURCE_EXHAUSTED / 503 at once (grpc.aio's own `maximum_concurrent_rpcs` would answer the same,
    but below our code and uncounted; this one is counted in serving_requests_total).
Shutdown waits on `drained()` for every accepted call to finish (bounded by the grace period) before
the transports stop, since grpc.aio's `server.stop(grace)` does not wait for handlers still running.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from serving.errors import QueueFull, Unavailable


class AdmissionGate:
    def __init__(self, max_concurrent: int = 0) -> None:
        if max_concurrent < 0:
            raise ValueError(f"max_concurrent must be >= 0 (0 = unlimited), got {max_concurrent}")
        self.max_concurrent = max_concurrent  # inference calls; 0 = unlimited
        self._calls = 0  # every accepted call still running
        self._inference = 0  # accepted inference calls still running
        self._draining = False
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def in_flight(self) -> int:
        return self._calls

    @property
    def draining(self) -> bool:
        return self._draining

    def enter(self, inference: bool) -> None:
        """Accept one call or raise Unavailable (draining) / QueueFull (too many inference calls)."""
        if self._draining:
            raise Unavailable("the server is shutting down")
        if inference:
            if self.max_concurrent and self._inference >= self.max_concurrent:
                raise QueueFull(
                    f"too many concurrent inference calls (max_concurrent_rpcs {self.max_concurrent})"
                )
            self._inference += 1
        self._calls += 1
        self._idle.clear()

    def leave(self, inference: bool) -> None:
        self._calls -= 1
        if inference:
            self._inference -= 1
        if self._calls == 0:
            self._idle.set()

    @contextlib.contextmanager
    def admitted(self, inference: bool) -> Iterator[None]:
        self.enter(inference)
        try:
            yield
        finally:
            self.leave(inference)

    def begin_drain(self) -> None:
        """Refuse every new call from now on."""
        self._draining = True

    async def drained(self, timeout_s: float) -> bool:
        """Wait until no accepted call is running; False if `timeout_s` passed first."""
        try:
            async with asyncio.timeout(max(timeout_s, 0.0)):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True
