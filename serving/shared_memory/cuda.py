"""CUDA shared memory (Triton's extension): a client's device buffer, opened through its CUDA IPC handle.

The client allocates device memory, exports it with cudaIpcGetMemHandle and registers the 64-byte handle
(tritonclient.utils.cuda_shared_memory does this). The server opens it once with cudaIpcOpenMemHandle and
copies an input's bytes from it (device → host) and an output's bytes into it (host → device), with the
CUDA runtime that torch's CUDA build brings (libcudart, through ctypes). Inputs are staged on the host
because batching concatenates requests there; outputs leave the host once.

Not verified on a GPU yet: this project's machines have none, and the GPU tests run only where a device
is lent (tests/integration/test_shared_memory.py, `cuda` tests).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
import threading
from dataclasses import dataclass, field
from pathlib import Path

from serving.errors import FailedPrecondition, InvalidInput

HANDLE_BYTES = 64
_H2D, _D2H = 1, 2
_LAZY_PEER_ACCESS = 1


class _IpcHandle(ctypes.Structure):
    _fields_ = [("reserved", ctypes.c_char * HANDLE_BYTES)]


def _library_paths() -> list[str]:
    names = ["libcudart.so", "libcudart.so.13", "libcudart.so.12"]
    found = ctypes.util.find_library("cudart")
    try:  # the nvidia-cuda-runtime wheel that torch's CUDA build depends on
        spec = importlib.util.find_spec("nvidia.cuda_runtime")
    except ImportError:
        spec = None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        names = [str(p) for p in sorted(Path(folder, "lib").glob("libcudart.so*"))] + names
    return ([found] if found else []) + names


class CudaRuntime:
    """The few CUDA runtime calls CUDA shared memory needs; FailedPrecondition when there is no runtime."""

    def __init__(self) -> None:
        errors = []
        for path in _library_paths():
            try:
                self._lib = ctypes.CDLL(path)
                break
            except OSError as exc:
                errors.append(str(exc))
        else:
            raise FailedPrecondition(f"CUDA shared memory needs the CUDA runtime (libcudart): {errors[-1:]}")
        self._lib.cudaGetErrorString.restype = ctypes.c_char_p
        self._lib.cudaIpcOpenMemHandle.argtypes = [ctypes.POINTER(ctypes.c_void_p), _IpcHandle, ctypes.c_uint]
        self._lib.cudaMemcpy.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        self._lib.cudaIpcCloseMemHandle.argtypes = [ctypes.c_void_p]

    def _check(self, code: int, what: str) -> None:
        if code != 0:
            message = self._lib.cudaGetErrorString(code).decode(errors="replace")
            raise InvalidInput(f"{what}: CUDA error {code} ({message})")

    def open(self, handle: bytes, device: int, what: str) -> int:
        if len(handle) != HANDLE_BYTES:
            raise InvalidInput(f"{what}: raw_handle must be {HANDLE_BYTES} bytes, got {len(handle)}")
        self._check(self._lib.cudaSetDevice(ctypes.c_int(device)), what)
        pointer = ctypes.c_void_p()
        self._check(
            self._lib.cudaIpcOpenMemHandle(ctypes.byref(pointer), _IpcHandle(handle), _LAZY_PEER_ACCESS), what
        )
        return int(pointer.value or 0)

    def close(self, pointer: int, device: int) -> None:
        self._lib.cudaSetDevice(ctypes.c_int(device))
        self._lib.cudaIpcCloseMemHandle(ctypes.c_void_p(pointer))

    def to_host(self, pointer: int, device: int, size: int, what: str) -> bytes:
        buffer = ctypes.create_string_buffer(size)
        self._check(self._lib.cudaSetDevice(ctypes.c_int(device)), what)
        self._check(self._lib.cudaMemcpy(buffer, ctypes.c_void_p(pointer), size, _D2H), what)
        return buffer.raw

    def to_device(self, pointer: int, device: int, data: bytes, what: str) -> None:
        self._check(self._lib.cudaSetDevice(ctypes.c_int(device)), what)
        self._check(self._lib.cudaMemcpy(ctypes.c_void_p(pointer), data, len(data), _H2D), what)


@dataclass
class CudaRegion:
    name: str
    device_id: int
    byte_size: int
    pointer: int
    runtime: CudaRuntime
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _bounds(self, offset: int, size: int, what: str) -> None:
        if offset < 0 or size < 0 or offset + size > self.byte_size:
            raise InvalidInput(
                f"{what}: {size} bytes at offset {offset} do not fit in CUDA shared memory region "
                f"'{self.name}' of {self.byte_size} bytes"
            )

    def read(self, offset: int, size: int, what: str) -> bytes:
        self._bounds(offset, size, what)
        with self._lock:
            return self.runtime.to_host(self.pointer + offset, self.device_id, size, what)

    def write(self, offset: int, data: bytes | memoryview, what: str) -> None:
        self._bounds(offset, len(data), what)
        with self._lock:
            self.runtime.to_device(self.pointer + offset, self.device_id, bytes(data), what)

    def close(self) -> None:
        self.runtime.close(self.pointer, self.device_id)
