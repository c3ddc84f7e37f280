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

from serving.core.request import InferenceRequest, InferenceResponse, validate_request
from serving.errors import InvalidInput, Unavailable
from serving.lifecycle.registry import ModelRegistry
from serving.lifecycle.version import ModelVersion
from serving.traffic.router import TrafficControl
from serving.traffic.shadow import ShadowRunner

# Triton's per-request queue timeout parameter, in microseconds (honoured when the model's queue
# policy has allow_timeout_override).
TIMEOUT_PARAMETER = "timeout"


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

    async def infer(self, request: InferenceRequest, deadline: float | None) -> InferenceResponse:
        """`deadline` is absolute on time.monotonic(): the caller's gRPC deadline, if any."""
        timeout_s = _timeout_s(request)
        version, shadow = self._select(request)
        validate_request(version.spec, request)
        try:
            outputs = await version.infer(request, deadline=deadline, timeout_s=timeout_s)
        except Unavailable:
            if request.model_version or version.ready:
                raise
            version, shadow = self._select(request)  # it left routing before taking the request
            outputs = await version.infer(request, deadline=deadline, timeout_s=timeout_s)
        if shadow is not None and self._shadows is not None:
            self._shadows.submit(request.model_name, version.version, shadow, request, outputs)
        return InferenceResponse(
            model_name=version.name,
            model_version=str(version.version),
            id=request.id,
            outputs=outputs,
            output_datatypes={t.name: t.datatype for t in version.spec.outputs},
        )

    def _select(self, request: InferenceRequest) -> tuple[ModelVersion, ModelVersion | None]:
        """The version that serves `request`, and the one that gets a shadow copy of it (or None)."""
        if request.model_version or self._traffic is None:
            return self.registry.resolve(request.model_name, request.model_version), None
        model = self.registry.model(request.model_name)
        ready = {number: v for number, v in model.versions.items() if v.ready}
        if not ready:
            return self.registry.resolve(request.model_name), None  # raises, with the reason
        states = {number: v.state.value for number, v in model.versions.items()}
        chosen = self._traffic.choose(request.model_name, ready, request.routing_key, states)
        shadow = self._traffic.shadow_for(request.model_name, chosen, ready) if self._shadows else None
        return ready[chosen], ready.get(shadow) if shadow is not None else None


def _timeout_s(request: InferenceRequest) -> float | None:
    value = request.parameters.get(TIMEOUT_PARAMETER)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(f"parameter '{TIMEOUT_PARAMETER}' must be a non-negative integer (microseconds)")
    return value / 1e6
