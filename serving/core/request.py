"""The domain form of one inference request and its validation against a model's config.

Codecs in serving/api turn protobuf into these types; everything below the API works on them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from serving.errors import InvalidInput
from serving.lifecycle.repository import ModelSpec, TensorSpec
from serving.types import Array, decode_utf8, numpy_to_v2

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

    def rows(self, spec: ModelSpec) -> int:
        """Rows in a batching model's request (its batch dimension); 1 for a non-batching model."""
        if spec.max_batch_size == 0 or not self.inputs:
            return 1
        return int(next(iter(self.inputs.values())).shape[0])


@dataclass(frozen=True)
class InferenceResponse:
    model_name: str
    model_version: str
    id: str
    outputs: dict[str, Array]
    output_datatypes: dict[str, str] = field(default_factory=dict)  # output name → KServe datatype


def validate_request(spec: ModelSpec, request: InferenceRequest) -> None:
    """Raise InvalidInput, naming the input, if the request does not fit the model's config."""
    model = f"model '{spec.name}'"
    expected = [t.name for t in spec.inputs]
    for name in request.inputs:
        if spec.input(name) is None:
            raise InvalidInput(f"unexpected input '{name}' for {model}; it expects {expected}")
    missing = [t.name for t in spec.inputs if not t.optional and t.name not in request.inputs]
    if missing:
        raise InvalidInput(f"{model} expects input(s) {missing}, not given")
    batch_sizes = set()
    for name, array in request.inputs.items():
        tensor = spec.input(name)
        assert tensor is not None
        _check_tensor(spec, tensor, array)
        if spec.max_batch_size > 0:
            batch_sizes.add(int(array.shape[0]))
    if len(batch_sizes) > 1:
        raise InvalidInput(f"inputs of {model} disagree on the batch size: {sorted(batch_sizes)}")
    outputs = [t.name for t in spec.outputs]
    for name in request.requested_outputs:
        if name not in outputs:
            raise InvalidInput(f"unknown output '{name}' requested from {model}; it has {outputs}")


def _check_tensor(spec: ModelSpec, tensor: TensorSpec, array: Array) -> None:
    where = f"input '{tensor.name}' of model '{spec.name}'"
    datatype = numpy_to_v2(array.dtype)
    if datatype != tensor.datatype:
        raise InvalidInput(f"{where}: datatype {datatype} does not match the model's {tensor.datatype}")
    if datatype == "BYTES":
        # Checked here, per request, so that one client's bad string fails only its own request and
        # never the batch it would have joined.
        for index, item in enumerate(array.reshape(-1)):
            decode_utf8(tensor.name, index, item)
    shape = tuple(int(d) for d in array.shape)
    batching = spec.max_batch_size > 0
    expected = ((-1,) if batching else ()) + tensor.dims
    if len(shape) != len(expected) or any(e != -1 and e != s for e, s in zip(expected, shape, strict=True)):
        raise InvalidInput(f"{where}: shape {list(shape)} does not match the model's {list(expected)}")
    if batching:
        rows = shape[0]
        if rows < 1:
            raise InvalidInput(f"{where}: batch size must be at least 1, got {rows}")
        if rows > spec.max_batch_size:
            raise InvalidInput(f"{where}: batch size {rows} exceeds max_batch_size {spec.max_batch_size}")
