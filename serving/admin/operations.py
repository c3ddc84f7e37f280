"""The operator's view and controls of a model, for the admin API: traffic policy, versions, shadows.

Changes are checked against the model's versions before they are written, so that an operator's typo
cannot take a model down: a split needs at least one of its weighted versions READY, a promoted version
must be READY, and every version named must exist (a folder in the repository, or one the server
knows). Rollback is the emergency exit and is not second-guessed. Where a change came from is recorded
in the policy history (`source`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from serving.errors import NotFound
from serving.lifecycle.registry import Model, ModelRegistry
from serving.lifecycle.version import ModelVersion
from serving.traffic.policy import PolicyError
from serving.traffic.router import PolicyStatus, TrafficControl, traffic_shares
from serving.traffic.shadow import ShadowPairSnapshot, ShadowRunner
from serving.traffic.store import HistoryEntry


@dataclass(frozen=True)
class VersionInfo:
    version: int
    state: str
    reason: str = ""
    devices: tuple[str, ...] = ()
    queue_depth: int = 0
    in_flight: int = 0
    load_seconds: float = 0.0
    traffic_share: float = 0.0
    retired: bool = False  # an instance that left routing (hot swapped or removed) and drains


class ModelAdmin:
    def __init__(self, registry: ModelRegistry, traffic: TrafficControl, shadows: ShadowRunner) -> None:
        self._registry = registry
        self._traffic = traffic
        self._shadows = shadows

    # ---- reading -------------------------------------------------------------------------------

    def policy(self, model: str) -> PolicyStatus:
        self._check_model(model)
        return self._traffic.status(model)

    async def history(self, model: str, limit: int | None) -> list[HistoryEntry]:
        self._check_model(model)
        return await self._traffic.history(model, limit)

    def versions(self, model: str) -> list[VersionInfo]:
        """Every version the server knows of `model`: loading, serving, draining, unloaded or failed."""
        self._check_model(model)
        loaded = self._loaded(model)
        if loaded is None:
            return []
        ready = [v.version for v in loaded.ready_versions()]
        shares = traffic_shares(self._traffic.policy(model), ready)
        infos = [_info(v, shares.get(n, 0.0), retired=False) for n, v in sorted(loaded.versions.items())]
        loading = loaded.loading_only()
        infos += [_info(v, 0.0, retired=False) for v in loading.values()]
        infos += [_info(v, 0.0, retired=True) for _, v in sorted(loaded.retired.items())]
        infos += [
            VersionInfo(n, "FAILED", reason)
            for n, reason in sorted(loaded.failures.items())
            if n not in loaded.versions and n not in loading
        ]
        return sorted(infos, key=lambda i: (i.version, i.retired))

    def shadow_stats(self, model: str) -> list[ShadowPairSnapshot]:
        self._check_model(model)
        return self._shadows.stats(model)

    # ---- changes -------------------------------------------------------------------------------

    async def split(
        self, model: str, weights: Mapping[int, float], sticky: bool | None, source: str
    ) -> HistoryEntry:
        self._check_model(model)
        if not weights:
            raise PolicyError("weights: give at least one version=weight")
        for version in weights:
            self._check_version(model, version)
        weighted = sorted(v for v, w in weights.items() if w > 0)
        if weighted and not any(self._registry.is_ready(model, str(v)) for v in weighted):
            raise PolicyError(
                f"weights: none of the weighted versions {weighted} of '{model}' is READY "
                f"({self._states_text(model)}); the split would leave it nothing to serve"
            )
        return await self._traffic.split(model, weights, sticky, source)

    async def promote(self, model: str, version: int, source: str) -> HistoryEntry:
        self._check_model(model)
        self._check_version(model, version)
        if not self._registry.is_ready(model, str(version)):
            raise PolicyError(
                f"version {version} of '{model}' is not READY ({self._states_text(model)}); "
                "promote a version that serves"
            )
        return await self._traffic.promote(model, version, source)

    async def set_shadow(self, model: str, version: int, fraction: float, source: str) -> HistoryEntry:
        self._check_model(model)
        self._check_version(model, version)
        default: int | None = None
        if self._traffic.policy(model) is None:
            loaded = self._loaded(model)
            ready = loaded.ready_versions() if loaded is not None else []
            default = ready[-1].version if ready else None
        return await self._traffic.set_shadow(model, version, fraction, default, source)

    async def clear_shadow(self, model: str, source: str) -> HistoryEntry:
        self._check_model(model)
        return await self._traffic.clear_shadow(model, source)

    async def rollback(self, model: str, source: str) -> HistoryEntry:
        self._check_model(model)
        return await self._traffic.rollback(model, source)

    async def clear(self, model: str, source: str) -> HistoryEntry:
        self._check_model(model)
        return await self._traffic.clear(model, source)

    # ---- checks --------------------------------------------------------------------------------

    def _check_model(self, model: str) -> None:
        if model not in self._registry.model_names() and model not in self._registry.repository.model_names():
            raise NotFound(f"unknown model '{model}'")

    def _check_version(self, model: str, version: int) -> None:
        loaded = self._loaded(model)
        known = loaded is not None and any(
            version in versions for versions in (loaded.versions, loaded.loading, loaded.failures)
        )
        if not known and not (self._registry.repository.root / model / str(version)).is_dir():
            raise NotFound(f"model '{model}' has no version {version} (no folder {model}/{version}/)")

    def _loaded(self, model: str) -> Model | None:
        return self._registry.loaded_model(model)

    def _states_text(self, model: str) -> str:
        versions = self.versions(model)
        return ", ".join(f"{i.version}={i.state}" for i in versions if not i.retired) or "nothing loaded"


def _info(version: ModelVersion, share: float, *, retired: bool) -> VersionInfo:
    return VersionInfo(
        version=version.version,
        state=version.state.value,
        reason=version.reason,
        devices=tuple(p.device for p in version.placements),
        queue_depth=version.queue_depth,
        in_flight=version.in_flight,
        load_seconds=version.load_seconds,
        traffic_share=share,
        retired=retired,
    )
