"""Loading and unloading models: the registry's lifecycle plus the traffic policy that routes them.

Every load (startup, RepositoryModelLoad, a poll that saw the repository change) goes through here, so
that the model's traffic.json is read again with it: a fresh start and every replica route the same way.

Model control modes (Triton's):
  explicit  the default: at start only the models that --load-model names load ('*': all; none named:
            none, as in Triton), then on RepositoryModelLoad / RepositoryModelUnload;
  poll      every model loads at start, then the server follows the repository
            (serving/lifecycle/poller.py); explicit load and unload requests are refused (Unavailable),
            as Triton does, since the next poll would undo them;
  none      every model loads at start; load and unload requests are still served.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from serving.errors import NotFound, ServingError, Unavailable
from serving.lifecycle.registry import ModelRegistry
from serving.traffic.router import TrafficControl
from serving.traffic.shadow import ShadowRunner

log = logging.getLogger("serving.lifecycle")

POLL = "poll"
EXPLICIT = "explicit"
ALL_MODELS = "*"  # --load-model '*': every model of the repository


class ModelControl:
    def __init__(
        self,
        registry: ModelRegistry,
        traffic: TrafficControl | None = None,
        shadows: ShadowRunner | None = None,
        *,
        mode: str = "explicit",
    ) -> None:
        self.registry = registry
        self._traffic = traffic
        self._shadows = shadows
        self.mode = mode

    # ---- the API's requests ------------------------------------------------------------------

    async def request_load(self, name: str) -> None:
        """RepositoryModelLoad: re-read `name` and apply its version policy (hot swap)."""
        self._check_explicit("load")
        if name not in self.registry.repository.model_names():
            raise NotFound(f"no model '{name}' in the model repository")
        await self.load(name)

    async def request_unload(self, name: str) -> None:
        """RepositoryModelUnload: drain, then unload every version of `name`."""
        self._check_explicit("unload")
        await self.unload(name)

    def _check_explicit(self, what: str) -> None:
        if self.mode == POLL:
            raise Unavailable(
                f"explicit model {what} is not allowed in poll mode: the server follows the model "
                "repository (change the repository instead)"
            )

    # ---- lifecycle ---------------------------------------------------------------------------

    async def load(self, name: str) -> None:
        """Load or reload `name`; its traffic policy is read again even if a version failed."""
        try:
            await self.registry.load(name)
        finally:
            if self._traffic is not None:
                self._traffic.refresh(name, force=True)

    async def unload(self, name: str) -> None:
        await self.registry.unload(name)
        if self._traffic is not None:
            self._traffic.forget(name)
        if self._shadows is not None:
            self._shadows.forget(name)

    def startup_models(self, requested: Sequence[str]) -> list[str]:
        """What loads at start: explicit mode loads only `requested` ('*' = all), as Triton's
        --load-model; the other modes load the whole repository (requested is ignored)."""
        if self.mode == EXPLICIT and ALL_MODELS not in requested:
            return list(dict.fromkeys(requested))
        return self.registry.repository.model_names()

    async def load_startup(self, names: Sequence[str]) -> None:
        """Load `names`; one model's failure never stops the others."""
        names = list(names)
        results = await asyncio.gather(*(self.load(name) for name in names), return_exceptions=True)
        for name, result in zip(names, results, strict=True):
            if isinstance(result, ServingError):
                log.error("model '%s': %s", name, result)
            elif isinstance(result, BaseException):
                raise result
