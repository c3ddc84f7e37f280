"""The traffic policies in force: one per model, read from the repository, changed by operators.

`TrafficControl` holds, per model, the policy that routes requests now. It is read from the model's
`traffic.json` (serving/traffic/store.py) when the model loads, when a poll sees the file change and
after every admin change. A file that does not parse or validate is rejected: the last good policy stays
in force, the error is logged and kept (`status(model).error`) for the admin API. Routing itself is the
pure `serving.traffic.policy.choose_version`; this module only holds state and never imports grpc.

Admin changes are serialised (one asyncio lock); each reads the policy on disk (the truth every replica
shares; the in-force one if the file is invalid), computes the new policy with serving.traffic.policy's
operations, writes it atomically through the PolicyStore on a worker thread (fsync must not block the
event loop), then puts it in force. A change is therefore in force when its call returns.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from serving.traffic import policy as routing
from serving.traffic.policy import PolicyError, TrafficPolicy
from serving.traffic.store import FileSignature, HistoryEntry, PolicyStore

log = logging.getLogger("serving.traffic")

Compute = Callable[[TrafficPolicy | None], TrafficPolicy]


class RoutingObserver(Protocol):
    """Metrics hook (serving.telemetry.metrics.ServingMetrics has this method)."""

    def routed(self, model: str, version: str) -> None: ...


@dataclass(frozen=True)
class PolicyStatus:
    model: str
    policy: TrafficPolicy | None  # in force; None = the highest READY version serves
    file: Path
    error: str  # why the file on disk was rejected; "" when the policy in force is the file


@dataclass
class _InForce:
    policy: TrafficPolicy | None = None
    signature: FileSignature | None = None
    error: str = ""


def traffic_shares(policy: TrafficPolicy | None, ready: Collection[int]) -> dict[int, float]:
    """The share (0..1) of routed requests each ready version gets now under `policy`."""
    if policy is None:
        return {max(ready): 1.0} if ready else {}
    weights = {v: w for v, w in policy.weights.items() if w > 0.0 and v in ready}
    total = sum(weights.values())
    return {v: w / total for v, w in weights.items()} if total > 0 else {}


class TrafficControl:
    def __init__(
        self,
        store: PolicyStore,
        *,
        rng: random.Random | None = None,
        observer: RoutingObserver | None = None,
    ) -> None:
        self._store = store
        self._rng = rng if rng is not None else random.Random()
        self._observer = observer
        self._models: dict[str, _InForce] = {}
        self._changes = asyncio.Lock()

    # ---- the policy in force -------------------------------------------------------------------

    def policy(self, model: str) -> TrafficPolicy | None:
        state = self._models.get(model)
        return state.policy if state is not None else None

    def status(self, model: str) -> PolicyStatus:
        state = self._models.get(model) or _InForce()
        return PolicyStatus(model, state.policy, self._store.policy_path(model), state.error)

    def file_signature(self, model: str) -> FileSignature | None:
        return self._store.file_signature(model)

    def refresh(self, model: str, *, force: bool = False) -> bool:
        """Re-read `model`'s traffic.json if it changed (or `force`); True if the policy in force changed.
        An invalid file keeps the last good policy in force and records the error."""
        known = model in self._models
        state = self._models.setdefault(model, _InForce())
        signature = self._store.file_signature(model)
        if known and not force and signature == state.signature:
            return False
        state.signature = signature
        try:
            policy = self._store.load(model)
        except PolicyError as exc:
            state.error = str(exc)
            log.error("%s; the last good policy stays in force: %s", exc, _describe(state.policy))
            return False
        state.error = ""
        if policy == state.policy:
            return False
        log.info("traffic policy of '%s' in force: %s", model, _describe(policy))
        state.policy = policy
        return True

    def reconcile(self, model: str) -> None:
        """Record a traffic.json edited outside the server in the history (see PolicyStore.reconcile)."""
        try:
            entry = self._store.reconcile(model)
        except (PolicyError, OSError) as exc:
            log.warning("traffic policy history of '%s' not updated: %s", model, exc)
            return
        if entry is not None:
            log.info("traffic policy of '%s' edited in the file: %s", model, _describe(entry.policy))

    def forget(self, model: str) -> None:
        self._models.pop(model, None)

    # ---- routing -------------------------------------------------------------------------------

    def choose(
        self,
        model: str,
        ready_versions: Collection[int],
        routing_key: str | None,
        states: Mapping[int, str] | None = None,
    ) -> int:
        """The version for a request that names none (Unavailable if no weighted version is ready)."""
        version = routing.choose_version(
            model, self.policy(model), ready_versions, routing_key or None, self._rng, states
        )
        if self._observer is not None:
            self._observer.routed(model, str(version))
        return version

    def shadow_for(self, model: str, primary: int, ready_versions: Collection[int]) -> int | None:
        """The version that gets a shadow copy of this request, or None (sampled by the fraction)."""
        return routing.should_shadow(self.policy(model), primary, self._rng, ready_versions)

    # ---- admin changes -------------------------------------------------------------------------

    async def split(
        self, model: str, weights: Mapping[int, float], sticky: bool | None, source: str
    ) -> HistoryEntry:
        return await self._change(model, "split", source, lambda cur: routing.split(cur, weights, sticky))

    async def promote(self, model: str, version: int, source: str) -> HistoryEntry:
        return await self._change(model, "promote", source, lambda cur: routing.promote(cur, version))

    async def set_shadow(
        self, model: str, version: int, fraction: float, default_version: int | None, source: str
    ) -> HistoryEntry:
        return await self._change(
            model,
            "shadow",
            source,
            lambda cur: routing.set_shadow(cur, version, fraction, default_version=default_version),
        )

    async def clear_shadow(self, model: str, source: str) -> HistoryEntry:
        return await self._change(model, "clear_shadow", source, routing.clear_shadow)

    async def rollback(self, model: str, source: str) -> HistoryEntry:
        async with self._changes:
            entry = await asyncio.to_thread(self._store.rollback, model, source)
            self._put_in_force(model, entry.policy)
        return entry

    async def clear(self, model: str, source: str) -> HistoryEntry:
        async with self._changes:
            entry = await asyncio.to_thread(self._store.clear, model, source)
            self._put_in_force(model, entry.policy)
        return entry

    async def history(self, model: str, limit: int | None) -> list[HistoryEntry]:
        return await asyncio.to_thread(self._store.history, model, limit)

    async def _change(self, model: str, action: str, source: str, compute: Compute) -> HistoryEntry:
        async with self._changes:
            fallback = self.policy(model)

            def write() -> HistoryEntry:
                try:
                    current = self._store.load(model)
                except PolicyError:
                    current = fallback  # the file is invalid: build on the policy in force
                return self._store.save(model, compute(current), action, source)

            entry = await asyncio.to_thread(write)
            self._put_in_force(model, entry.policy)
        return entry

    def _put_in_force(self, model: str, policy: TrafficPolicy | None) -> None:
        state = self._models.setdefault(model, _InForce())
        state.policy = policy
        state.signature = self._store.file_signature(model)
        state.error = ""
        log.info("traffic policy of '%s' in force: %s", model, _describe(policy))


def _describe(policy: TrafficPolicy | None) -> str:
    return policy.describe() if policy is not None else "none (the highest READY version serves)"
