"""`InferenceService`: the one facade every transport (gRPC, HTTP) calls; no grpc, no JSON here.

Each KServe v2 operation is one method that answers in domain terms (booleans, `ModelVersion`s, index
entries, an `InferenceResponse`); serving/api's codecs turn those into protobuf or JSON.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from serving import SERVER_NAME, __version__
from serving.core.dataplane import DataPlane
from serving.core.request import InferenceRequest, InferenceResponse
from serving.lifecycle.control import ModelControl
from serving.lifecycle.override import LoadOverride
from serving.lifecycle.registry import IndexEntry, ModelRegistry
from serving.lifecycle.version import ModelVersion
from serving.shared_memory.regions import SharedMemoryRegions

EXTENSIONS = (
    "classification",
    "model_repository",
    "model_configuration",
    "system_shared_memory",
    "statistics",
    "binary_tensor_data",
    "parameters",
)


@dataclass(frozen=True)
class ServerInfo:
    name: str
    version: str
    extensions: tuple[str, ...]


@dataclass(frozen=True)
class ModelInfo:
    """What ModelMetadata describes: the resolved version and the model's READY version numbers."""

    version: ModelVersion
    ready_versions: tuple[str, ...]


class InferenceService:
    def __init__(
        self,
        registry: ModelRegistry,
        dataplane: DataPlane,
        ready: asyncio.Event,
        control: ModelControl | None = None,
        shared_memory: SharedMemoryRegions | None = None,
    ) -> None:
        # Clients' registered shared-memory regions, shared by every transport (Triton's extension).
        self.shared_memory = shared_memory or SharedMemoryRegions()
        self._registry = registry
        self._dataplane = dataplane
        self._control = control or ModelControl(registry)
        self._ready = ready  # set once the startup load finished; cleared when shutting down

    # ---- health and metadata --------------------------------------------------------------------

    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        return self._ready.is_set()

    def model_ready(self, name: str, version: str = "") -> bool:
        return self._registry.is_ready(name, version)

    def server_info(self) -> ServerInfo:
        return ServerInfo(SERVER_NAME, __version__, EXTENSIONS)

    def model_info(self, name: str, version: str = "") -> ModelInfo:
        """NotFound / Unavailable as registry.resolve raises them."""
        resolved = self._registry.resolve(name, version)
        ready = tuple(str(v.version) for v in self._registry.model(name).ready_versions())
        return ModelInfo(resolved, ready)

    def model_version(self, name: str, version: str = "") -> ModelVersion:
        """The version whose effective config ModelConfig describes."""
        return self._registry.resolve(name, version)

    # ---- inference ------------------------------------------------------------------------------

    async def infer(self, request: InferenceRequest) -> InferenceResponse:
        return await self._dataplane.infer(request)

    # ---- statistics and repository --------------------------------------------------------------

    def statistics(self, name: str = "", version: str = "") -> list[ModelVersion]:
        """The versions ModelStatistics reports, ordered by (name, version): every loaded one when no
        name is given; a model's versions; or the one version asked for."""
        if name:
            versions = list(self._registry.model(name).versions.values())
            if version:
                versions = [self._registry.resolve(name, version)]
        else:
            versions = self._registry.all_versions()
        return sorted(versions, key=lambda v: (v.name, v.version))

    def repository_index(self, ready_only: bool = False) -> list[IndexEntry]:
        return [e for e in self._registry.index() if not ready_only or e.state == "READY"]

    async def load(self, name: str, override: LoadOverride | None = None) -> None:
        await self._control.request_load(name, override)

    async def unload(self, name: str) -> None:
        await self._control.request_unload(name)
