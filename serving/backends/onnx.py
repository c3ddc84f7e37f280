"""The onnxruntime backend: one InferenceSession per model instance.

On a 'cuda:N' placement the session gets [CUDAExecutionProvider(device_id=N), CPUExecutionProvider] (nodes
the CUDA EP lacks run on the CPU EP) and `infer` goes through IOBinding: inputs are copied to device N
as OrtValues (input stage), the session runs with outputs bound on the device (infer stage), and
outputs are copied back (output stage). On the CPU the session simply runs on the host arrays.

Parameters (config.pbtxt `parameters`, all strings):
    cpu_threads                 intra-op threads of the session (default: onnxruntime's choice)
    cudnn_conv_algo_search, gpu_mem_limit, arena_extend_strategy, cudnn_conv_use_max_workspace,
    do_copy_in_default_stream   passed through to the CUDA execution provider on a GPU placement
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import onnxruntime as ort

from serving.backends.base import BatchResult, ComputeTimings, InstanceSpec, Placement
from serving.backends.devices import DeviceInventory, gpu_index
from serving.errors import ModelConfigError, Unavailable
from serving.types import Array, TensorMap, utf8_bytes, utf8_texts

logger = logging.getLogger("serving.backends")

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER_OPTIONS = (
    "cudnn_conv_algo_search",
    "gpu_mem_limit",
    "arena_extend_strategy",
    "cudnn_conv_use_max_workspace",
    "do_copy_in_default_stream",
)

ProviderSpec = str | tuple[str, dict[str, int | str]]


class SessionTensor(NamedTuple):
    """An input or output as the session declares it."""

    name: str
    is_string: bool  # a string tensor (BYTES): it lives on the host


def ort_providers(
    placement: Placement, inventory: DeviceInventory, parameters: Mapping[str, str]
) -> list[ProviderSpec]:
    """The provider list for a session on `placement`; a GPU placement without the CUDA EP is an error."""
    if not placement.is_gpu:
        return [CPU_PROVIDER]
    if not inventory.ort_has_cuda:
        raise ModelConfigError(
            f"placement {placement.device} needs onnxruntime's {CUDA_PROVIDER}, but the available "
            f"providers are {list(inventory.ort_providers)} (install onnxruntime-gpu or use KIND_CPU)"
        )
    options: dict[str, int | str] = {"device_id": gpu_index(placement)}
    options.update({key: parameters[key] for key in CUDA_PROVIDER_OPTIONS if key in parameters})
    return [(CUDA_PROVIDER, options), CPU_PROVIDER]


def session_options(model_file: Path, parameters: Mapping[str, str]) -> Any:
    """SessionOptions: every graph optimisation, and `cpu_threads` intra-op threads when given."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if "cpu_threads" in parameters:
        options.intra_op_num_threads = _positive_int(model_file, "cpu_threads", parameters["cpu_threads"])
    return options


def _positive_int(model_file: Path, key: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise ModelConfigError(f"{model_file}: parameter {key} must be a positive integer, got {value!r}")
    return number


def _tensor(arg: Any) -> SessionTensor:
    return SessionTensor(str(arg.name), arg.type == "tensor(string)")


def to_ort(name: str, array: Array) -> Array:
    """An input as onnxruntime takes it. BYTES (object arrays of `bytes`) become arrays of `str`:
    onnxruntime's Python binding stores a `str` as its exact UTF-8 bytes (NULs included) but turns any
    other object, `bytes` too, into its repr. Every element must be valid UTF-8 (validate_request checks
    that before batching); one that is not is refused, naming the element, never altered."""
    if array.dtype.kind != "O":
        return array
    text = np.empty(array.size, dtype=object)
    text[:] = utf8_texts(name, array)
    return text.reshape(array.shape)


def from_ort(value: Array) -> Array:
    """An output as the rest of the server takes it: string tensors (arrays of `str`) become `bytes`."""
    if value.dtype.kind not in ("O", "U"):
        return value
    return utf8_bytes(value.reshape(-1)).reshape(value.shape)


def _host_runner(session: Any, output_names: list[str]) -> Any:
    """`feeds → outputs` on the host. InferenceSession.run checks its arguments in Python on every call
    (graph capture, OrtValue ownership, missing inputs) before calling its C++ binding, which checks
    the inputs again; on a CPU session nothing of that applies to numpy feeds (the request schema
    checked them), and the Python checks cost ~1 µs warm but ~11 µs when the caches are cold, as they
    are between requests in the server (docs/performance.md). So the binding (`_sess.run`, the same
    call InferenceSession.run ends in) is called directly when it is there; its errors are the same."""
    binding = getattr(session, "_sess", None)
    if binding is None or not callable(getattr(binding, "run", None)):
        return lambda feeds: session.run(output_names, feeds)
    run = binding.run
    return lambda feeds: run(output_names, feeds, None)


def _closed(feeds: Any) -> Any:
    raise Unavailable("the onnxruntime session is closed")


class OnnxBackend:
    """One onnxruntime session on one device."""

    placement: Placement

    def __init__(self, instance: InstanceSpec) -> None:
        model_file, placement, parameters = instance.model_file, instance.placement, instance.parameters
        self.placement = placement
        self._model_file = model_file
        providers = ort_providers(placement, instance.inventory, parameters)
        self._session: Any = self._open(model_file, session_options(model_file, parameters), providers)
        self._inputs = [_tensor(arg) for arg in self._session.get_inputs()]
        self._outputs = [_tensor(arg) for arg in self._session.get_outputs()]
        self._device_id = gpu_index(placement) if placement.is_gpu else 0
        self._run_host = _host_runner(self._session, [spec.name for spec in self._outputs])

    def _open(self, model_file: Path, options: Any, providers: list[ProviderSpec]) -> Any:
        if not model_file.is_file():
            raise ModelConfigError(f"{model_file}: model file not found")
        try:
            session = ort.InferenceSession(str(model_file), sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own Exception subclasses (InvalidProtobuf, …)
            raise ModelConfigError(f"{model_file}: onnxruntime cannot load the model: {exc}") from exc
        actual = list(session.get_providers())
        logger.info("%s on %s: onnxruntime providers %s", model_file, self.placement.device, actual)
        if self.placement.is_gpu and CUDA_PROVIDER not in actual:
            # onnxruntime falls back to the CPU silently when CUDA libraries fail to load; a GPU
            # placement that runs on the CPU would mislead capacity planning, so refuse it.
            raise ModelConfigError(
                f"{model_file}: {CUDA_PROVIDER} failed to initialise on {self.placement.device}; "
                f"the session got only {actual} (see onnxruntime's log for the CUDA/cuDNN error)"
            )
        return session

    def infer(self, inputs: TensorMap) -> BatchResult:
        session = self._session
        if session is None:
            raise Unavailable(f"{self._model_file} on {self.placement.device} is closed")
        feeds = {
            spec.name: to_ort(spec.name, inputs[spec.name]) for spec in self._inputs if spec.name in inputs
        }
        if self.placement.is_gpu:
            return self._infer_bound(session, feeds)
        start = time.perf_counter_ns()
        values = self._run_host(feeds)
        end = time.perf_counter_ns()
        outputs = {spec.name: from_ort(value) for spec, value in zip(self._outputs, values, strict=True)}
        return BatchResult(outputs, ComputeTimings(input_ns=0, infer_ns=end - start, output_ns=0))

    def _infer_bound(self, session: Any, feeds: dict[str, Array]) -> BatchResult:
        """IOBinding on the GPU: copy in, run with outputs left on the device, copy out."""
        start = time.perf_counter_ns()
        binding = session.io_binding()
        for name, array in feeds.items():
            self._bind_input(binding, name, array)
        binding.synchronize_inputs()
        for spec in self._outputs:
            device = "cpu" if spec.is_string else "cuda"  # string tensors live on the host
            binding.bind_output(spec.name, device, self._device_id)
        bound = time.perf_counter_ns()
        session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        ran = time.perf_counter_ns()
        values = binding.copy_outputs_to_cpu()  # in binding order, i.e. the session's output order
        end = time.perf_counter_ns()
        outputs = {spec.name: from_ort(value) for spec, value in zip(self._outputs, values, strict=True)}
        return BatchResult(outputs, ComputeTimings(bound - start, ran - bound, end - ran))

    def _bind_input(self, binding: Any, name: str, array: Array) -> None:
        if array.dtype.kind in ("O", "S", "U"):
            binding.bind_cpu_input(name, array)  # string tensors live on the host (already `str`: to_ort)
            return
        value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), "cuda", self._device_id)
        binding.bind_ortvalue_input(name, value)

    def host_buffer(self, name: str, shape: tuple[int, ...], dtype: np.dtype[Any]) -> Array | None:
        return None  # onnxruntime copies CPU inputs to a GPU itself

    def close(self) -> None:
        self._run_host = _closed
        self._session = None  # onnxruntime frees the session and its device memory with the last reference
