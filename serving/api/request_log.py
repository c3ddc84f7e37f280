"""Every finished inference request (gRPC or HTTP, an HTTP one under the gRPC code of its error), once:
`serving_requests_total` by status code, the end-to-end latency histogram, and the sampled access log.

Labels stay bounded: a successful reply names the model and version that served it (the registry's);
for a failed request the client's names are kept only when the registry holds that model (and version),
else they become `_unknown` (serving.telemetry.metrics.model_label), so random names cannot create series.

Access log: logger `serving.access`, one line per request for a fraction `sample_rate` of successful
requests and for every failed one, with the fields `request_id` (the request's `id`, else the
`x-request-id` metadata or HTTP header), `model`, `version`, `code` and `latency_ms`. They are in the
text line and, for `--log-format json`, top-level JSON keys (the record's `fields`,
serving.cli.JsonFormatter).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from serving.lifecycle.registry import ModelRegistry
from serving.proto import inference_pb2 as pb
from serving.telemetry.metrics import UNKNOWN, ServingMetrics, model_label

access_log = logging.getLogger("serving.access")

REQUEST_ID_METADATA = "x-request-id"
Metadata = Callable[[], Sequence[tuple[str, Any]] | None]


def request_labels(registry: ModelRegistry, model: str, version: str) -> tuple[str, str]:
    """Bounded (model, version) labels for a request that failed before a version answered it."""
    name = model_label(model, registry.model_names())
    if name == UNKNOWN:
        return UNKNOWN, UNKNOWN
    versions = {str(v.version) for v in registry.all_versions() if v.name == name}
    return name, model_label(version, versions)


class RequestRecorder:
    def __init__(
        self,
        metrics: ServingMetrics | None,
        registry: ModelRegistry,
        *,
        sample_rate: float,
        rng: random.Random | None = None,
        logger: logging.Logger = access_log,
    ) -> None:
        if not 0.0 <= sample_rate <= 1.0:
            raise ValueError(f"access log sample rate must be within [0, 1], got {sample_rate}")
        self._metrics = metrics
        self._registry = registry
        self._sample_rate = sample_rate
        self._rng = rng or random.Random()
        self._log = logger

    def finished(
        self,
        request: pb.ModelInferRequest,
        served: tuple[str, str] | None,
        code: grpc.StatusCode,
        seconds: float,
        metadata: Metadata,
    ) -> None:
        """Record one gRPC request; `served` is the (model, version) that answered, None when it failed."""
        self.record(
            RequestFacts(request.model_name, request.model_version, request.id, served),
            code,
            seconds,
            lambda: _metadata_value(metadata(), REQUEST_ID_METADATA),
        )

    def record(
        self, facts: RequestFacts, code: grpc.StatusCode, seconds: float, request_id: Callable[[], str]
    ) -> None:
        """Record one request of any transport (HTTP ones carry the gRPC code of their error);
        `request_id` gives the transport's `x-request-id` when the request has no id."""
        if facts.served is not None:
            model, version = facts.served
        else:
            model, version = request_labels(self._registry, facts.model, facts.version)
        if self._metrics is not None:
            self._metrics.request_finished(model, version, code.name, seconds)
        sampled = code is not grpc.StatusCode.OK or self._rng.random() < self._sample_rate
        if sampled and self._log.isEnabledFor(logging.INFO):
            fields = {
                "request_id": facts.request_id or request_id() or "-",
                # an unknown model keeps the client's name here (quoted, cut short): log lines are not series
                "model": repr(facts.model[:64]) if model == UNKNOWN else model,
                "version": version,
                "code": code.name,
                "latency_ms": round(seconds * 1e3, 3),
            }
            text = " ".join(f"{key}={value}" for key, value in fields.items())
            self._log.info("access %s", text, extra={"fields": fields})


@dataclass(frozen=True)
class RequestFacts:
    """What the access log and the request counter need of one finished request."""

    model: str  # as the client named it
    version: str
    request_id: str
    served: tuple[str, str] | None  # (model, version) that answered; None when it failed


def _metadata_value(metadata: Sequence[tuple[str, Any]] | None, key: str) -> str:
    for name, value in metadata or ():
        if name == key:
            return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    return ""
