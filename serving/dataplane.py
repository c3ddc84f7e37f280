"""The inference path below the API: pick the version, validate, batch, answer. No gRPC here."""

from __future__ import annotations

from serving.errors import InvalidInput
from serving.inference import InferenceRequest, InferenceResponse, validate_request
from serving.registry import ModelRegistry

# Triton's per-request queue timeout parameter, in microseconds (honoured when the model's queue
# policy has allow_timeout_override).
TIMEOUT_PARAMETER = "timeout"


class DataPlane:
    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    async def infer(self, request: InferenceRequest, deadline: float | None) -> InferenceResponse:
        """`deadline` is absolute on time.monotonic(): the caller's gRPC deadline, if any."""
        version = self.registry.resolve(request.model_name, request.model_version)
        validate_request(version.spec, request)
        outputs = await version.infer(request, deadline=deadline, timeout_s=_timeout_s(request))
        return InferenceResponse(
            model_name=version.name, model_version=str(version.version), id=request.id, outputs=outputs
        )


def _timeout_s(request: InferenceRequest) -> float | None:
    value = request.parameters.get(TIMEOUT_PARAMETER)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(f"parameter '{TIMEOUT_PARAMETER}' must be a non-negative integer (microseconds)")
    return value / 1e6
