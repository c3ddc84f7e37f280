"""The PyTorch backend: a TorchScript `.pt` or a torch.export `.pt2` module on the CPU or one GPU.

The model is called positionally with the inputs in config order and may return a tensor, a tuple or
list (mapped to the config's outputs in order) or a dict (by output name). Outputs are cast to the
config's datatypes on the way out.

Strings follow Triton's libtorch backend: a TYPE_STRING input reaches a TorchScript model as a List[str]
(every element UTF-8 decoded, in row-major order), and a List[str] the model returns for a TYPE_STRING
output comes back as BYTES (UTF-8 encoded), shaped (batch rows, *config dims), or by the dims alone
when the model does not batch. torch.export bakes non-tensor arguments in as constants, so a `.pt2`
config with TYPE_STRING tensors is refused at load.

On 'cuda:N' each instance runs on its own CUDA stream (so several instances on one GPU overlap). Inputs
reach the device from pinned host memory: a batch of several requests is merged straight into pinned
memory (`host_buffer`), and a lone request that came through a front-end's page-locked slot is copied
from there, so either copy to the GPU is one DMA; any other lone request is staged through a pinned
block first (one host copy). The three compute stages are timed after synchronising
that stream, so another instance's work never counts against this one. With `cuda_graphs` a batching
model replays one CUDA graph per padded batch-size bucket instead of launching its kernels one by one
(serving/backends/torch_graphs.py: buckets, padding, guards and fallbacks).

Parameters (config.pbtxt `parameters`, all strings):
    precision         fp32 (default) | fp16 | bf16: on a GPU the module and its floating inputs are
                      converted; on the CPU fp16/bf16 are ignored (slow or missing kernels) and logged
    (torch's CPU intra-op threads are process-wide too: the server sets them once, `--torch-threads`.)
    cudnn_benchmark   true | false (default): sets torch.backends.cudnn.benchmark on a GPU placement;
                      this flag is process-wide in torch, so it holds for every model in the process
    cuda_graphs       true | false (default): on a GPU, for a model with max_batch_size > 0, capture and
                      replay a CUDA graph per batch-size bucket (1, 2, 4, ... max_batch_size), captured
                      at load when every input has fixed dims, else when a bucket is first used; a
                      batch no graph can take runs eagerly. Ignored (and logged) on the CPU
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.export.passes import move_to_device_pass

from serving.backends.base import BatchResult, ComputeTimings, InstanceSpec, Placement, TensorDecl
from serving.backends.devices import DeviceInventory, gpu_index
from serving.backends.torch_graphs import CudaGraphs, cuda_graphs_wanted
from serving.errors import ModelConfigError, ModelExecutionError, Unavailable
from serving.parameters import flag
from serving.types import Array, TensorMap, utf8_bytes, utf8_texts

logger = logging.getLogger("serving.backends")
# torch.from_numpy warns on a read-only array (a front-end slot's view, `_pinned`); this module only
# copies such a tensor to the device. One filter, set once: warnings.catch_warnings per call is not
# thread-safe, and instances run on their own threads.
warnings.filterwarnings(
    "ignore", message="The given NumPy array is not writable", category=UserWarning, module=__name__
)

PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

_NUMPY_TO_TORCH: dict[np.dtype[Any], torch.dtype] = {
    np.dtype(np.bool_): torch.bool,
    np.dtype(np.uint8): torch.uint8,
    np.dtype(np.uint16): torch.uint16,
    np.dtype(np.uint32): torch.uint32,
    np.dtype(np.uint64): torch.uint64,
    np.dtype(np.int8): torch.int8,
    np.dtype(np.int16): torch.int16,
    np.dtype(np.int32): torch.int32,
    np.dtype(np.int64): torch.int64,
    np.dtype(np.float16): torch.float16,
    np.dtype(np.float32): torch.float32,
    np.dtype(np.float64): torch.float64,
}


def torch_dtype(model_file: Path, name: str, dtype: np.dtype[Any]) -> torch.dtype:
    """The torch dtype of a config datatype; BYTES and other non-numeric types are config errors."""
    try:
        return _NUMPY_TO_TORCH[np.dtype(dtype)]
    except KeyError:
        raise ModelConfigError(
            f"{model_file}: tensor {name!r} has datatype {dtype}, which torch cannot hold"
        ) from None


def torch_device(model_file: Path, placement: Placement, inventory: DeviceInventory) -> torch.device:
    if not placement.is_gpu:
        return torch.device("cpu")
    index = gpu_index(placement)
    if index >= inventory.gpu_count:
        raise ModelConfigError(
            f"{model_file}: placement {placement.device} but {inventory.gpu_count} GPU(s) are visible"
        )
    return torch.device("cuda", index)


def compute_dtype(
    model_file: Path, parameters: Mapping[str, str], device: torch.device
) -> torch.dtype | None:
    """The dtype the module runs in when it is not fp32, or None to leave the module as saved."""
    precision = parameters.get("precision", "fp32").lower()
    if precision not in PRECISIONS:
        raise ModelConfigError(
            f"{model_file}: parameter precision must be one of {sorted(PRECISIONS)}, got {precision!r}"
        )
    if precision == "fp32":
        return None
    if device.type != "cuda":
        logger.info("%s: precision %s ignored on the CPU; running fp32", model_file, precision)
        return None
    return PRECISIONS[precision]


def cudnn_benchmark(model_file: Path, parameters: Mapping[str, str], device: torch.device) -> bool:
    """Whether to turn torch.backends.cudnn.benchmark on for this model (GPU placements only)."""
    wanted = flag(parameters, "cudnn_benchmark", str(model_file))
    if wanted and device.type != "cuda":
        logger.info("%s: cudnn_benchmark ignored on the CPU", model_file)
        return False
    return wanted


def load_module(model_file: Path, device: torch.device) -> torch.nn.Module:
    """Load `.pt` with torch.jit.load or `.pt2` with torch.export.load, on `device`."""
    if not model_file.is_file():
        raise ModelConfigError(f"{model_file}: model file not found")
    try:
        if model_file.suffix == ".pt2":
            restrict_unpickling()
            program = torch.export.load(model_file)
            return move_to_device_pass(program, device).module()
        module: torch.nn.Module = torch.jit.load(str(model_file), map_location=device)  # type: ignore[no-untyped-call]
        module.eval()  # exported modules are already in the mode they were exported in (and refuse eval())
        return module
    except Exception as exc:
        raise ModelConfigError(f"{model_file}: torch cannot load the model: {exc}") from exc


def restrict_unpickling() -> None:
    """torch.export.load unpickles some weights with weights_only=False (and retries failed loads that
    way), so a crafted .pt2 could run code. torch's own switch forces every torch.load in the process to
    weights_only=True; the server never needs more. An operator who set TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD
    chose otherwise (the two together are refused by torch), and is left alone (docs/security.md)."""
    if "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD" not in os.environ:
        os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"


def set_torch_threads(threads: int) -> None:
    """torch's intra-op CPU threads, for the whole process. One thread suits small models on few
    cores, where a pool of spinning threads competes with gRPC for the CPU."""
    torch.set_num_threads(threads)
    logger.info("torch intra-op CPU threads: %d", torch.get_num_threads())


class TorchBackend:
    """One torch module on one device."""

    placement: Placement

    def __init__(
        self,
        instance: InstanceSpec,
        inputs: Sequence[TensorDecl],
        outputs: Sequence[TensorDecl],
        max_batch_size: int = 0,
    ) -> None:
        model_file, parameters = instance.model_file, instance.parameters
        if model_file.suffix == ".pt2":
            refuse_strings(model_file, inputs, outputs)
        self.placement = instance.placement
        self._model_file = model_file
        self._input_names = [decl.name for decl in inputs]
        self._outputs = {decl.name: _output_dtype(model_file, decl) for decl in outputs}
        self._output_shapes = {
            decl.name: _string_shape(model_file, decl, max_batch_size > 0) for decl in outputs
        }
        self._device = torch_device(model_file, self.placement, instance.inventory)
        self._half = compute_dtype(model_file, parameters, self._device)
        module = load_module(model_file, self._device)
        self._module: torch.nn.Module | None = module if self._half is None else module.to(self._half)
        self._stream = self._cuda_setup(parameters)
        self._graphs = self._graph_setup(parameters, inputs, max_batch_size)

    def _cuda_setup(self, parameters: Mapping[str, str]) -> torch.cuda.Stream | None:
        """On a GPU: the instance's own stream, and cudnn.benchmark when asked for; None on the CPU."""
        benchmark = cudnn_benchmark(self._model_file, parameters, self._device)
        if self._device.type != "cuda":
            return None
        if benchmark:
            torch.backends.cudnn.benchmark = True
        return torch.cuda.Stream(self._device)  # type: ignore[no-untyped-call]

    def _graph_setup(
        self, parameters: Mapping[str, str], inputs: Sequence[TensorDecl], max_batch_size: int
    ) -> CudaGraphs | None:
        """On a GPU with `cuda_graphs`: the graphs, every bucket captured now when the dims are fixed."""
        wanted = cuda_graphs_wanted(self._model_file, parameters, self._device, max_batch_size)
        if not wanted or self._stream is None or self._module is None:
            return None
        graphs = CudaGraphs(self._module, max_batch_size, self._stream)
        if all(decl.dtype.kind != "O" and -1 not in decl.dims for decl in inputs):
            with torch.cuda.device(self._device), torch.cuda.stream(self._stream), torch.inference_mode():
                examples = [self._example(decl) for decl in inputs]
                graphs.warm(examples)
            logger.info("%s: CUDA graphs for batch buckets %s", self._model_file, graphs.captured)
        return graphs

    def _example(self, decl: TensorDecl) -> torch.Tensor:
        """One zero row of input `decl` on the device, in the dtype the module receives."""
        tensor = torch.zeros((1, *decl.dims), dtype=torch_dtype(self._model_file, decl.name, decl.dtype))
        tensor = tensor.to(self._device)
        return tensor.to(self._half) if self._half is not None and tensor.is_floating_point() else tensor

    def infer(self, inputs: TensorMap) -> BatchResult:
        module, stream = self._module, self._stream  # locals: close() may run while a batch is in flight
        if module is None:
            raise Unavailable(f"{self._model_file} on {self.placement.device} is closed")
        arrays = {name: self._input(inputs, name) for name in self._input_names}
        if stream is None:
            with torch.inference_mode():
                return self._run(module, arrays, lambda: None)
        with torch.cuda.device(self._device), torch.cuda.stream(stream), torch.inference_mode():
            return self._run(module, arrays, stream.synchronize, self._graphs)

    def _input(self, inputs: TensorMap, name: str) -> Array:
        try:
            return inputs[name]
        except KeyError:
            raise ModelExecutionError(f"{self._model_file}: batch lacks input {name!r}") from None

    def _run(
        self,
        module: torch.nn.Module,
        arrays: dict[str, Array],
        sync: Callable[[], None],
        graphs: CudaGraphs | None = None,
    ) -> BatchResult:
        """The three stages, each timed after `sync` (the instance's CUDA stream; nothing on the CPU)."""
        start = time.perf_counter_ns()
        rows = next((array.shape[0] for array in arrays.values() if array.ndim), 1)  # for List[str] outputs
        values = [self._to_device(name, array) for name, array in arrays.items()]
        sync()
        moved = time.perf_counter_ns()
        result = None if graphs is None else graphs.run(values)
        if result is None:
            result = module(*values)
        sync()
        ran = time.perf_counter_ns()
        outputs = {name: self._to_host(name, value, rows) for name, value in self._named(result).items()}
        end = time.perf_counter_ns()
        return BatchResult(outputs, ComputeTimings(moved - start, ran - moved, end - ran))

    def host_buffer(self, name: str, shape: tuple[int, ...], dtype: np.dtype[Any]) -> Array | None:
        """On a GPU, pinned host memory (torch's caching host allocator) for a merged batch input: the
        batcher concatenates into it and `_to_device` copies it to the device with no staging copy."""
        torch_type = _NUMPY_TO_TORCH.get(np.dtype(dtype))  # None for BYTES (object) and the like
        if self._device.type != "cuda" or torch_type is None:
            return None
        with torch.cuda.device(self._device):  # as infer's staging does: no context on another GPU
            pinned: Array = torch.empty(shape, dtype=torch_type, pin_memory=True).numpy()
        return pinned  # the array keeps its tensor (and so the pinned block) alive

    def _to_device(self, name: str, array: Array) -> torch.Tensor | list[str]:
        if array.dtype.kind == "O":
            return utf8_texts(name, array)  # TYPE_STRING → List[str], row-major, as Triton's libtorch
        if self._device.type != "cuda":
            host = torch.from_numpy(_writable_contiguous(array))
        elif (pinned := _pinned(array)) is not None:
            host = pinned  # merged into host_buffer: straight to the device
        else:
            # Stage through pinned memory (torch caches pinned blocks): one host copy, then an async DMA.
            dtype = torch_dtype(self._model_file, name, array.dtype)
            host = torch.empty(array.shape, dtype=dtype, pin_memory=True)
            host.numpy()[...] = array
        tensor = host.to(self._device, non_blocking=True)
        if self._half is not None and tensor.is_floating_point():
            tensor = tensor.to(self._half)
        return tensor

    def _named(self, result: Any) -> dict[str, Any]:
        names = list(self._outputs)
        if isinstance(result, torch.Tensor) or _is_text_list(result):
            values: list[Any] = [result]
        elif isinstance(result, Mapping):
            missing = [name for name in names if name not in result]
            if missing:
                raise ModelExecutionError(
                    f"{self._model_file}: model returned no {missing}; it returned {sorted(result)}"
                )
            values = [result[name] for name in names]
        elif isinstance(result, (tuple, list)):
            values = list(result)
        else:
            raise ModelExecutionError(f"{self._model_file}: model returned a {type(result).__name__}")
        if len(values) != len(names) or not all(
            isinstance(value, torch.Tensor) or _is_text_list(value) for value in values
        ):
            raise ModelExecutionError(
                f"{self._model_file}: model returned {len(values)} value(s) but the config declares "
                f"outputs {names}"
            )
        return dict(zip(names, values, strict=True))

    def _to_host(self, name: str, value: torch.Tensor | list[str], rows: int) -> Array:
        dtype = self._outputs[name]
        if dtype is None:  # a TYPE_STRING output: the model's List[str], shaped by the config dims
            return self._strings(name, value, rows)
        if not isinstance(value, torch.Tensor):
            raise ModelExecutionError(f"{self._model_file}: output {name!r} is a list of str, not a tensor")
        # Cast where the tensor is (the GPU is fast at it), then copy to the host (blocking).
        return value.to(dtype=dtype).cpu().numpy()

    def _strings(self, name: str, value: torch.Tensor | list[str], rows: int) -> Array:
        if not isinstance(value, list):
            raise ModelExecutionError(
                f"{self._model_file}: output {name!r} is TYPE_STRING but the model returned a tensor, "
                "not a List[str]"
            )
        shape = tuple(rows if dim is None else dim for dim in self._output_shapes[name])
        try:
            return utf8_bytes(value).reshape(shape)
        except ValueError:
            raise ModelExecutionError(
                f"{self._model_file}: output {name!r}: {len(value)} strings do not fill the shape "
                f"{list(shape)} (the batch's rows, then the config dims)"
            ) from None

    def close(self) -> None:
        self._module = None
        self._stream = None
        self._graphs = None
        # Device memory returns to torch's caching allocator; empty_cache would stall other instances.


def refuse_strings(model_file: Path, inputs: Sequence[TensorDecl], outputs: Sequence[TensorDecl]) -> None:
    """torch.export bakes non-tensor arguments into the program as constants: it cannot take strings."""
    for kind, decls in (("input", inputs), ("output", outputs)):
        for decl in decls:
            if decl.dtype.kind == "O":
                raise ModelConfigError(
                    f"{model_file}: {kind} {decl.name!r} is TYPE_STRING, but torch.export (.pt2) models "
                    "cannot take or return strings; use TorchScript (.pt) or ONNX for string tensors"
                )


def _output_dtype(model_file: Path, decl: TensorDecl) -> torch.dtype | None:
    """The torch dtype an output is cast to; None for a TYPE_STRING output (a List[str])."""
    if decl.dtype.kind == "O":
        return None
    return torch_dtype(model_file, decl.name, decl.dtype)


def _string_shape(model_file: Path, decl: TensorDecl, batching: bool) -> tuple[int | None, ...]:
    """How a TYPE_STRING output's List[str] is shaped: None (the batch's rows) first when the model
    batches, then the config dims, where one -1 takes what the other dimensions leave."""
    if decl.dtype.kind != "O":
        return ()
    if decl.dims.count(-1) > 1:
        raise ModelConfigError(
            f"{model_file}: TYPE_STRING output {decl.name!r} has dims {list(decl.dims)}; a List[str] "
            "output can be shaped with at most one -1"
        )
    return ((None,) if batching else ()) + decl.dims


def _is_text_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _pinned(array: Array) -> torch.Tensor | None:
    """A tensor over `array`'s memory when that memory is pinned, else None: the batcher merged it into
    `host_buffer`, or it is a read-only view of a front-end's slot that the worker page-locked
    (serving/backends/host_memory.py). The tensor is only read, by the copy to the device."""
    if not array.flags.c_contiguous or array.dtype not in _NUMPY_TO_TORCH:
        return None
    tensor = torch.from_numpy(array)  # a read-only array's warning is filtered for this module (above)
    return tensor if tensor.is_pinned() else None


def _writable_contiguous(array: Array) -> Array:
    """torch.from_numpy shares memory, but warns on read-only arrays (np.frombuffer over request bytes)."""
    if array.flags.writeable and array.flags.c_contiguous:
        return array
    return np.array(array, order="C", copy=True)
