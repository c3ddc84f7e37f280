"""The `drift.*` parameters of a version's config.pbtxt, parsed into a validated `DriftConfig`.

Every key is listed in docs/metrics.md. Outputs without a `drift.<output>` key are monitored when
`drift.auto` is on, their kind inferred from the first batch by `infer_kind`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from serving.errors import ModelConfigError
from serving.telemetry.metrics import DRIFT_STATISTICS
from serving.types import Array

OutputKind = Literal["classification", "numeric"]
DEFAULT_VALUE_EDGES = (-10.0, -5.0, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 5.0, 10.0)
DEFAULT_THRESHOLDS = {"psi": 0.2, "js_distance": 0.2, "confidence_psi": 0.2, "ks": 0.15}


@dataclass(frozen=True)
class OutputSpec:
    kind: OutputKind
    edges: tuple[float, ...] = DEFAULT_VALUE_EDGES  # numeric: buckets of serving_prediction_value


@dataclass(frozen=True)
class DriftConfig:
    """From config.pbtxt `parameters` (string values): see docs/metrics.md for every `drift.*` key."""

    outputs: Mapping[str, OutputSpec | None] = field(default_factory=dict)  # None: the output is "off"
    auto: bool = True  # monitor outputs without a `drift.<output>` key, kind inferred from the first batch
    window_requests: int = 2000
    window_seconds: float = 600.0
    window_buckets: int = 10
    min_rows: int = 500
    reference_rows: int = 2000
    values_per_request: int = 16
    thresholds: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, str]) -> DriftConfig:
        fields: dict[str, Any] = {"outputs": {}, "thresholds": dict(DEFAULT_THRESHOLDS)}
        for key, value in parameters.items():
            if key.startswith("drift."):
                _apply_key(fields, key, value.strip())
        config = cls(**fields)
        if config.window_buckets > config.window_requests:
            raise ModelConfigError("drift.window.buckets must not exceed drift.window.requests")
        return config

    def spec_for(self, output: str, first_batch: Array) -> OutputSpec | None:
        if output in self.outputs:
            return self.outputs[output]
        if not self.auto:
            return None
        kind = infer_kind(first_batch)
        return OutputSpec(kind) if kind is not None else None


_INT_KEYS = {
    "drift.window.requests": "window_requests",
    "drift.window.buckets": "window_buckets",
    "drift.window.min_rows": "min_rows",
    "drift.reference.rows": "reference_rows",
    "drift.sample.values_per_request": "values_per_request",
}


def _apply_key(fields: dict[str, Any], key: str, value: str) -> None:
    try:
        if key in _INT_KEYS:
            fields[_INT_KEYS[key]] = _positive(int(value))
        elif key == "drift.window.seconds":
            fields["window_seconds"] = _positive(float(value))
        elif key == "drift.auto":
            fields["auto"] = {"true": True, "false": False}[value.lower()]
        elif key.startswith("drift.threshold."):
            statistic = key.removeprefix("drift.threshold.")
            if statistic not in DRIFT_STATISTICS:
                raise ValueError(f"statistic must be one of {DRIFT_STATISTICS}")
            fields["thresholds"][statistic] = _positive(float(value))
        else:
            fields["outputs"][key.removeprefix("drift.")] = _output_spec(value)
    except (ValueError, KeyError) as exc:
        raise ModelConfigError(f"config.pbtxt parameter {key!r} = {value!r}: {exc}") from exc


def _positive(x: float) -> Any:
    if not x > 0 or not math.isfinite(x):
        raise ValueError("must be a positive number")
    return x


def _output_spec(value: str) -> OutputSpec | None:
    kind, _, edges_text = value.partition(":")
    if value == "off":
        return None
    if value == "classification":
        return OutputSpec("classification")
    if kind != "numeric":
        raise ValueError("expected 'classification', 'numeric', 'numeric:<e1>,<e2>,…' or 'off'")
    if not edges_text:
        return OutputSpec("numeric")
    edges = tuple(float(e) for e in edges_text.split(","))
    if not all(math.isfinite(e) for e in edges) or any(
        b <= a for a, b in zip(edges, edges[1:], strict=False)
    ):
        raise ValueError("bucket edges must be finite and strictly increasing")
    return OutputSpec("numeric", edges)


def infer_kind(batch: Array) -> OutputKind | None:
    """2-D float rows of non-negative numbers summing to ~1 → classification; other numbers → numeric."""
    if batch.dtype.kind not in "fiub":
        return None
    if batch.dtype.kind == "f" and batch.ndim == 2 and batch.shape[1] >= 2 and batch.size > 0:
        rows = batch.astype(np.float64)
        if np.all(rows >= -1e-6) and np.allclose(rows.sum(axis=1), 1.0, atol=1e-3):
            return "classification"
    return "numeric"
