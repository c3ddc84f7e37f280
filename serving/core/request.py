"""The domain form of one inference request and its validation against a model's config.

A transport's codec (serving/api) builds ONE complete `InferenceRequest`: tensors, parameters, the
routing key, the absolute deadline and the queue-timeout override. The data plane validates it once,
against a `RequestSchema` built once per loaded version (inputs by name, expected shapes, outputs), and
conforms the outputs to the config's datatypes, so the encoders need nothing but the response.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from serving.core.classification import classify
from serving.errors import InvalidInput
from serving.lifecycle.repository import ModelSpec, TensorSpec
from serving.types import V2_TO_NUMPY, Array, decode_utf8, numpy_to_v2

ParamValue = bool | int | float | str


@dataclass(frozen=True)
class InferenceRequest:
    model_name: str
    model_version: str  # "" = the model's default or routed version
    id: str
    inputs: dict[str, Array]
    requested_outputs: tuple[str, ...] = ()  # empty = every output
    parameters: dict[str, ParamValue] = field(default_factory=dict)
    routing_key: str = ""  # sticky routing: the `routing_key` parameter or `x-routing-key` metadata
    deadline: float | None = None  # absolute, on time.monotonic(): the caller's deadline, if any
    timeout_s: float | None = None  # queue-timeout override (Triton's `timeout` parameter), if any
    output_classes: dict[str, int] = field(default_factory=dict)  # output → class_count (classification)


@dataclass(frozen=True)
class InferenceResponse:
    model_name: str
    model_version: str
    id: str
    outputs: dict[str, Array]  # already in the config's datatypes (RequestSchema.conform_outputs)


@dataclass(frozen=True)
class _InputRule:
    tensor: TensorSpec
    shape: tuple[int, ...]  # the request's expected shape, -1 = any (the batch dimension included)
    dtype: np.dtype[Any]  # the numpy dtype of the config's datatype


class RequestSchema:
    """What a request to one model must look like: lookup tables built once from its ModelSpec."""

    def __init__(self, spec: ModelSpec) -> None:
        self.name = spec.name
        self.max_batch_size = spec.max_batch_size
        batch = (-1,) if spec.max_batch_size > 0 else ()
        self._inputs = {t.name: _InputRule(t, batch + t.dims, V2_TO_NUMPY[t.datatype]) for t in spec.inputs}
        self._input_names = [t.name for t in spec.inputs]
        self._required = [t.name for t in spec.inputs if not t.optional]
        self._outputs = [t.name for t in spec.outputs]
        self._output_set = frozenset(self._outputs)
        self._labels = {t.name: t.labels for t in spec.outputs}
        # BYTES outputs are framed as they are; others are cast to the config's dtype when they differ.
        self._output_dtypes: dict[str, np.dtype[Any]] = {
            t.name: V2_TO_NUMPY[t.datatype] for t in spec.outputs if t.datatype != "BYTES"
        }

    def validate(self, request: InferenceRequest) -> None:
        """Raise InvalidInput, naming the input, if the request does not fit the model's config.
        The error texts are built only when a check fails."""
        inputs = request.inputs
        rules = self._inputs
        for name in inputs:
            if name not in rules:
                raise InvalidInput(
                    f"unexpected input '{name}' for model '{self.name}'; it expects {self._input_names}"
                )
        for name in self._required:
            if name not in inputs:
                missing = [name for name in self._required if name not in inputs]
                raise InvalidInput(f"model '{self.name}' expects input(s) {missing}, not given")
        batch_size = -1
        for name, array in inputs.items():
            self._check_tensor(rules[name], array)
            if self.max_batch_size > 0:
                if batch_size < 0:
                    batch_size = array.shape[0]
                elif array.shape[0] != batch_size:
                    sizes = sorted({int(a.shape[0]) for a in inputs.values()})
                    raise InvalidInput(f"inputs of model '{self.name}' disagree on the batch size: {sizes}")
        for name in (*request.requested_outputs, *request.output_classes):
            if name not in self._output_set:
                raise InvalidInput(
                    f"unknown output '{name}' requested from model '{self.name}'; it has {self._outputs}"
                )

    def _check_tensor(self, rule: _InputRule, array: Array) -> None:
        tensor = rule.tensor
        if array.dtype != rule.dtype:
            datatype = numpy_to_v2(array.dtype)
            if datatype != tensor.datatype:
                raise InvalidInput(
                    f"{self._where(tensor)}: datatype {datatype} does not match the model's {tensor.datatype}"
                )
        if tensor.datatype == "BYTES":
            # Checked here, per request, so that one client's bad string fails only its own request and
            # never the batch it would have joined.
            for index, item in enumerate(array.reshape(-1)):
                decode_utf8(tensor.name, index, item)
        shape, expected = array.shape, rule.shape
        if len(shape) != len(expected) or any(e not in (-1, s) for e, s in zip(expected, shape, strict=True)):
            raise InvalidInput(
                f"{self._where(tensor)}: shape {list(shape)} does not match the model's {list(expected)}"
            )
        if self.max_batch_size > 0:
            rows = shape[0]
            if rows < 1:
                raise InvalidInput(f"{self._where(tensor)}: batch size must be at least 1, got {rows}")
            if rows > self.max_batch_size:
                raise InvalidInput(
                    f"{self._where(tensor)}: batch size {rows} exceeds max_batch_size {self.max_batch_size}"
                )

    def _where(self, tensor: TensorSpec) -> str:
        return f"input '{tensor.name}' of model '{self.name}'"

    def conform_outputs(self, outputs: dict[str, Array], classes: Mapping[str, int]) -> dict[str, Array]:
        """The outputs in the config's datatypes (a backend may answer, say, FP16 for an FP32 output);
        those in `classes` (Triton's classification extension) as their top classes instead."""
        conformed = dict(outputs)
        for name, array in outputs.items():
            if name in classes:
                batching = self.max_batch_size > 0
                conformed[name] = classify(array, classes[name], self._labels[name], batching, name)
                continue
            dtype = self._output_dtypes.get(name)
            if dtype is not None and array.dtype != dtype:
                conformed[name] = array.astype(dtype)
        return conformed
