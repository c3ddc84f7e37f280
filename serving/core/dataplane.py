"""The inference path below the API: pick the version, validate, batch, answer. No gRPC here.

Picking the version: a request that names one gets exactly that one (registry.resolve: NotFound if it
does not exist, Unavailable if it is not READY). Otherwise the model's traffic policy chooses among its
READY versions (serving/traffic/router.py); a version leaves routing (the registry removes it) before it
drains. Nothing awaits between the choice and the request entering the version's queue, and a drain
completes every queued request, so a routed request cannot be lost to a swap; should one still meet a
version that stopped serving, it is routed once more. A sampled copy goes to the shadow version after
the primary answered (serving/traffic/shadow.py), never on the client's path.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Mapping

from serving.core.request import InferenceRequest, InferenceResponse, RequestSchema
from serving.errors import Unavailable
from serving.lifecycle.registry import ModelRegistry
from serving.lifecycle.version import ModelVersion
from serving.traffic.router import TrafficControl
from serving.traffic.shadow import ShadowRunner


class DataPlane:
    def __init__(
        self,
        registry: ModelRegistry,
        traffic: TrafficControl | None = None,
        shadows: ShadowRunner | None = None,
    ) -> None:
        self.registry = registry
        self._traffic = traffic  # None: the highest READY version serves every unpinned request
        self._shadows = shadows
        # One schema per loaded version, built on its first request; gone with the version.
        self._schemas: weakref.WeakKeyDictionary[ModelVersion, RequestSchema] = weakref.WeakKeyDictionary()

    async def infer(self, request: InferenceRequest) -> InferenceResponse:
        """`request` is complete (codec): its deadline and queue-timeout override are already in it."""
        version, shadow = self._select(request)
        self._schema(version).validate(request)
        try:
            outputs = await version.infer(request, deadline=request.deadline, timeout_s=request.timeout_s)
        except Unavailable:
            if request.model_version or version.ready:
                raise
            version, shadow = self._select(request)  # it left routing before taking the request
            outputs = await version.infer(request, deadline=request.deadline, timeout_s=request.timeout_s)
        if shadow is not None and self._shadows is not None:
            self._shadows.submit(request.model_name, version.version, shadow, request, outputs)
        return InferenceResponse(
            model_name=version.name,
            model_version=str(version.version),
            id=request.id,
            outputs=self._schema(version).conform_outputs(outputs, request.output_classes),
        )

    def _schema(self, version: ModelVersion) -> RequestSchema:
        schema = self._schemas.get(version)
        if schema is None:
            schema = self._schemas[version] = RequestSchema(version.spec)
        return schema

    def _select(self, request: InferenceRequest) -> tuple[ModelVersion, ModelVersion | None]:
        """The version that serves `request`, and the one that gets a shadow copy of it (or None)."""
        if request.model_version or self._traffic is None:
            return self.registry.resolve(request.model_name, request.model_version), None
        model = self.registry.model(request.model_name)
        ready = {number: v for number, v in model.versions.items() if v.ready}
        if not ready:
            return self.registry.resolve(request.model_name), None  # raises, with the reason
        states = _States(model.versions)  # read only if routing fails (the message names the states)
        chosen = self._traffic.choose(request.model_name, ready, request.routing_key, states)
        shadow = self._traffic.shadow_for(request.model_name, chosen, ready) if self._shadows else None
        return ready[chosen], ready.get(shadow) if shadow is not None else None


class _States(Mapping[int, str]):
    """version → state name, read from the versions only when asked."""

    def __init__(self, versions: Mapping[int, ModelVersion]) -> None:
        self._versions = versions

    def __getitem__(self, number: int) -> str:
        return self._versions[number].state.value

    def __iter__(self) -> Iterator[int]:
        return iter(self._versions)

    def __len__(self) -> int:
        return len(self._versions)
