"""The registry owns which model versions are loaded and their lifecycle; it never serves requests.

Register before load: a version is listed (`Model.loading`, shown by `index()`, the admin API and
/metrics as LOADING, then WARMING) from the moment its load begins, but only READY versions are routed.
Loading follows the hot-swap order: a new or changed version loads and warms up while the versions
already serving keep serving (and are what `index()` shows for that number); only once it is READY does
it replace the old one, which then drains (every queued and running request completes) and unloads. A
version that fails never takes traffic and leaves whatever was serving in place; its failure stays
visible in `index()`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from serving.backends.base import Placement
from serving.errors import InvalidInput, ModelConfigError, NotFound, Unavailable
from serving.lifecycle.memory import release_freed_memory
from serving.lifecycle.repository import (
    BackendLoader,
    ModelRepository,
    ModelSpec,
    VersionSource,
    select_versions,
    version_numbers,
    version_source,
)
from serving.lifecycle.version import ModelVersion, VersionState
from serving.quoting import clip
from serving.telemetry.observer import Telemetry

log = logging.getLogger("serving.lifecycle")

PlacementPlanner = Callable[[ModelSpec, VersionSource], list[Placement]]


@dataclass(frozen=True)
class IndexEntry:
    name: str
    version: str
    state: str
    reason: str


@dataclass
class Model:
    name: str
    spec: ModelSpec | None = None
    versions: dict[int, ModelVersion] = field(default_factory=dict)  # routable once READY
    loading: dict[int, ModelVersion] = field(default_factory=dict)  # registered, loading or warming
    failures: dict[int, str] = field(default_factory=dict)  # version → why its latest load failed
    error: str = ""  # why the model as a whole could not be read (bad config.pbtxt)
    # Instances that left routing (hot swapped or out of the version policy): DRAINING, then UNLOADED.
    retired: dict[int, ModelVersion] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def ready_versions(self) -> list[ModelVersion]:
        return [v for _, v in sorted(self.versions.items()) if v.ready]

    def loading_only(self) -> dict[int, ModelVersion]:
        """Versions loading that no instance serves yet (a hot swap's old instance speaks for its number)."""
        return {n: v for n, v in sorted(self.loading.items()) if n not in self.versions}


def parse_version(version: str) -> int:
    """A request's version string as a number; InvalidInput (Triton's text) unless a whole number."""
    if not (version.isascii() and version.isdigit()):
        raise InvalidInput(
            f"failed to get model version from specified version string '{clip(version)}' "
            "(details: not an integer > 0), version should be an integral value > 0"
        )
    return int(version)


class ModelRegistry:
    def __init__(
        self,
        repository: ModelRepository,
        loader: BackendLoader,
        planner: PlacementPlanner,
        telemetry: Telemetry | None = None,
        *,
        default_max_queue_size: int = 0,
    ) -> None:
        self.repository = repository
        self._default_max_queue_size = default_max_queue_size  # for configs that set no max_queue_size
        self._loader = loader
        self._planner = planner
        self._telemetry = telemetry  # versions' statistics, metrics and drift (serving/telemetry/observer.py)
        self._models: dict[str, Model] = {}

    # ---- lookups -------------------------------------------------------------------------------

    def model_names(self) -> list[str]:
        return sorted(self._models)

    def model(self, name: str) -> Model:
        model = self._models.get(name)
        if model is None:
            if name in self._repository_names():
                raise Unavailable(f"model '{clip(name)}' is not loaded")
            raise NotFound(f"Request for unknown model: '{clip(name)}' is not found")
        return model

    def loaded_model(self, name: str) -> Model | None:
        """`name`'s versions if the registry holds the model (loaded, or failed to), else None."""
        return self._models.get(name)

    def _repository_names(self) -> list[str]:
        try:
            return self.repository.model_names()
        except ModelConfigError:
            return []

    def resolve(self, name: str, version: str = "") -> ModelVersion:
        """The version serving a request that names `version` ("" = the default: the highest READY)."""
        model = self.model(name)
        if not version:
            ready = model.ready_versions()
            if not ready:
                why = f": {model.error}" if model.error else ""
                raise Unavailable(f"model '{name}' has no ready version{why}")
            return ready[-1]
        number = parse_version(version)
        found = model.versions.get(number)
        if found is None:
            raise self._not_serving(model, version, number)
        if not found.ready:
            raise Unavailable(f"model '{name}' version {version} is not ready ({found.state.value})")
        return found

    @staticmethod
    def _not_serving(model: Model, version: str, number: int) -> NotFound | Unavailable:
        """A version that exists but cannot serve (FAILED, DRAINING, UNLOADED): unavailable; else: unknown."""
        where = f"model '{model.name}' version {version}"
        if number in model.loading:
            return Unavailable(f"{where} is not ready ({model.loading[number].state.value}: still loading)")
        if number in model.failures:
            return Unavailable(f"{where} is not ready (FAILED: {model.failures[number]})")
        if number in model.retired:
            return Unavailable(f"{where} is not ready ({model.retired[number].state.value})")
        known = sorted(model.versions)
        return NotFound(
            f"Request for unknown model: '{model.name}' version {version} is not found "
            f"(loaded versions: {known})"
        )

    def is_ready(self, name: str, version: str = "") -> bool:
        """ModelReady: the version resolves, is READY and its batches are not failing one after another."""
        try:
            resolved = self.resolve(name, version)
        except (NotFound, Unavailable):
            return False
        return resolved.healthy

    def index(self) -> list[IndexEntry]:
        """Every model of the repository and every version the registry knows, with its state."""
        entries: list[IndexEntry] = []
        names = set(self._models)
        try:
            names.update(self.repository.model_names())
        except ModelConfigError as exc:
            log.warning("%s", exc)
        for name in sorted(names):
            model = self._models.get(name)
            if model is None:
                entries.append(IndexEntry(name, "", "UNAVAILABLE", "not loaded"))
                continue
            if model.error:
                entries.append(IndexEntry(name, "", VersionState.FAILED.value, model.error))
            entries += self._version_entries(model)
        return entries

    @staticmethod
    def _version_entries(model: Model) -> list[IndexEntry]:
        """One entry per version number: the serving instance, else the loading one, else the failure,
        else the retired instance (in that order: serving versions first)."""
        groups: list[dict[int, tuple[str, str]]] = [
            {n: (v.state.value, v.reason) for n, v in model.versions.items()},
            {n: (v.state.value, v.reason) for n, v in model.loading.items()},
            {n: (VersionState.FAILED.value, reason) for n, reason in model.failures.items()},
            {n: (v.state.value, v.reason) for n, v in model.retired.items()},
        ]
        entries: list[IndexEntry] = []
        shown: set[int] = set()
        for group in groups:
            for number, (state, reason) in sorted(group.items()):
                if number not in shown:
                    shown.add(number)
                    entries.append(IndexEntry(model.name, str(number), state, reason))
        return entries

    def all_versions(self) -> list[ModelVersion]:
        return [v for m in self._models.values() for v in m.versions.values()]

    # ---- lifecycle ------------------------------------------------------------------------------

    async def load(self, name: str, spec: ModelSpec | None = None) -> None:
        """(Re)read `name` from the repository (or load `spec`, a load's config override, instead) and
        apply its version policy, hot-swapping changes."""
        model = self._models.setdefault(name, Model(name))
        async with model.lock:
            try:
                spec = spec or self.repository.read(name)
                available = version_numbers(spec.path)
            except ModelConfigError as exc:
                model.error = str(exc)
                if not model.versions:
                    log.error("model '%s' not loaded: %s", name, exc)
                    raise ModelConfigError(f"failed to load '{name}': {exc}") from None
                serving = sorted(model.versions)
                log.error("model '%s' not reloaded, versions %s serve on: %s", name, serving, exc)
                raise ModelConfigError(
                    f"failed to load '{name}': {exc} (the versions loaded before, {serving}, serve on)"
                ) from None
            model.error = ""
            wanted = select_versions(spec.config.version_policy, available)
            try:
                retired = await self._load_versions(model, spec, wanted)
            finally:
                model.loading.clear()  # each load of a model holds its lock: what remains was cancelled
            model.spec = spec
            stale = [v for n, v in model.versions.items() if n not in wanted]
            for version in stale:
                del model.versions[version.version]
            for version in retired + stale:
                model.retired[version.version] = version
            model.failures = {n: r for n, r in model.failures.items() if n in wanted}
            failures = [f"version {n}: {model.failures[n]}" for n in wanted if n in model.failures]
        await asyncio.gather(*(v.drain_and_unload() for v in retired + stale))
        if retired or stale:
            await asyncio.to_thread(release_freed_memory)
        if failures:
            raise ModelConfigError(f"failed to load '{name}': " + "; ".join(failures))

    async def _load_versions(self, model: Model, spec: ModelSpec, wanted: list[int]) -> list[ModelVersion]:
        """Load the wanted versions that are new or changed; returns the old versions they replaced."""
        changed = [n for n in wanted if not self._unchanged(model.versions.get(n), spec)]
        fresh = await asyncio.gather(*(self._load_version(model, spec, n) for n in changed))
        retired: list[ModelVersion] = []
        for number, version in zip(changed, fresh, strict=True):
            if version is None:
                continue
            old = model.versions.get(number)
            model.versions[number] = version  # the switch: new requests now reach the new version
            del model.loading[number]
            model.failures.pop(number, None)
            if old is not None:
                retired.append(old)
        return retired

    @staticmethod
    def _unchanged(current: ModelVersion | None, spec: ModelSpec) -> bool:
        if current is None or not current.ready:
            return False
        try:
            same_file = current.source.model_file.stat().st_mtime_ns == current.file_mtime_ns
        except OSError:
            return False
        same_folder = current.spec.path == spec.path  # a load from override files: a new folder
        return same_file and same_folder and current.spec.config == spec.config

    async def _load_version(self, model: Model, spec: ModelSpec, number: int) -> ModelVersion | None:
        try:
            source = version_source(spec, number)
            placements = self._planner(spec, source)
        except ModelConfigError as exc:
            model.failures[number] = str(exc)
            log.error("model '%s' version %d FAILED: %s", model.name, number, exc)
            return None
        version = ModelVersion(
            spec, source, placements, self._telemetry, default_max_queue_size=self._default_max_queue_size
        )
        model.loading[number] = version  # listed from now on (LOADING, WARMING); routed once switched in
        await version.load(self._loader)
        if version.state is not VersionState.READY:
            del model.loading[number]
            model.failures[number] = version.reason
            return None
        return version

    async def unload(self, name: str) -> None:
        """Drain and unload every version of `name`."""
        model = self.model(name)
        async with model.lock:
            versions = list(model.versions.values())
            model.versions.clear()
            self._models.pop(name, None)
        await asyncio.gather(*(v.drain_and_unload() for v in versions))
        await asyncio.to_thread(release_freed_memory)

    async def close(self) -> None:
        await asyncio.gather(*(self.unload(name) for name in list(self._models)))
