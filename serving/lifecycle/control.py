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
import shutil
from collections.abc import Sequence
from pathlib import Path

from serving.errors import InvalidInput, ModelConfigError, NotFound, ServingError, Unavailable
from serving.lifecycle.override import LoadOverride, spec_from_override
from serving.lifecycle.registry import ModelRegistry
from serving.lifecycle.repository import ModelSpec, check_model_name
from serving.quoting import clip
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
        self._temporary: dict[str, list[Path]] = {}  # model → folders written from `file:` overrides

    # ---- the API's requests ------------------------------------------------------------------

    async def request_load(self, name: str, override: LoadOverride | None = None) -> None:
        """RepositoryModelLoad: re-read `name` and apply its version policy (hot swap). An override
        (serving/lifecycle/override.py) replaces config.pbtxt, and with files the model folder, for this
        load; a refused override changes nothing."""
        self._check_explicit("load")
        _check_name(name, "load")
        if override is None or override.empty:
            if name not in self.registry.repository.model_names():
                raise NotFound(f"failed to load '{clip(name)}': no such model in the model repository")
            try:
                await self.load(name)
            finally:
                self._adopt(name, None)  # folders of an earlier override that no version uses now
            return
        spec, folder = await asyncio.to_thread(
            spec_from_override, name, override, self.registry.repository.root / name
        )
        try:
            await self.load(name, spec)
        finally:
            self._adopt(name, folder)

    def _adopt(self, name: str, folder: Path | None) -> None:
        """Keep the temporary folders that a version of `name` loads from; remove the others."""
        folders = self._temporary.pop(name, []) + ([folder] if folder is not None else [])
        model = self.registry.loaded_model(name)
        in_use = [v.spec.path for v in model.versions.values()] if model is not None else []
        keep = [f for f in folders if any(path.is_relative_to(f) for path in in_use)]
        for stale in folders:
            if stale not in keep:
                shutil.rmtree(stale, ignore_errors=True)
        if keep:
            self._temporary[name] = keep

    def close(self) -> None:
        """Remove every temporary model folder (at shutdown, once the models are unloaded)."""
        for folders in self._temporary.values():
            for folder in folders:
                shutil.rmtree(folder, ignore_errors=True)
        self._temporary.clear()

    async def request_unload(self, name: str) -> None:
        """RepositoryModelUnload: drain, then unload every version of `name`."""
        self._check_explicit("unload")
        _check_name(name, "unload")
        await self.unload(name)

    def _check_explicit(self, what: str) -> None:
        if self.mode == POLL:
            raise Unavailable(
                f"explicit model {what} is not allowed in poll mode: the server follows the model "
                "repository (change the repository instead)"
            )

    # ---- lifecycle ---------------------------------------------------------------------------

    async def load(self, name: str, spec: ModelSpec | None = None) -> None:
        """Load or reload `name`; its traffic policy is read again even if a version failed."""
        try:
            await self.registry.load(name, spec)
        finally:
            if self._traffic is not None:
                self._traffic.refresh(name, force=True)

    async def unload(self, name: str) -> None:
        await self.registry.unload(name)
        for folder in self._temporary.pop(name, []):
            shutil.rmtree(folder, ignore_errors=True)
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


def _check_name(name: str, what: str) -> None:
    """A name from a client reaches the file system: it must be one folder name of the repository
    (no '..', no separators, not absolute), or the request is refused before anything is read."""
    try:
        check_model_name(name)
    except ModelConfigError:
        raise InvalidInput(
            f"failed to {what} '{clip(name)}': a model name must be one folder name of the model repository"
        ) from None
