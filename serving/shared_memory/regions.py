"""The registered shared-memory regions of clients, by name: Triton's system (POSIX) shared-memory extension.

A client creates a POSIX shared-memory object (`shm_open(key)`, e.g. with tritonclient.utils.shared_memory),
registers `name → (key, offset, byte_size)`, then names the region in an input's or a requested output's
parameters (`shared_memory_region`, `shared_memory_offset`, `shared_memory_byte_size`). The server maps the
object once, at registration, and reads inputs from it (no copy until the batch is formed) and writes outputs
into it. Every access is bounds-checked against the registered window: an offset or size outside it, or an
unregistered name, is InvalidInput (never a crash, never a read or write outside the window).

The key must name an object directly under /dev/shm (one leading '/' allowed, no other '/'), so a client
cannot make the server map an arbitrary file. Unregistering drops the mapping; a request that is still using
it keeps its own reference, and the mapping closes when the last one goes.

CUDA shared memory (`CudaSharedMemoryRegister`, serving/shared_memory/cuda.py) needs a GPU; on a server
without one it is refused with FAILED_PRECONDITION saying so. Names are unique across both kinds.
"""

from __future__ import annotations

import mmap
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from serving.errors import AlreadyExists, FailedPrecondition, InvalidInput, NotFound
from serving.quoting import clip
from serving.shared_memory.cuda import CudaRegion, CudaRuntime

SHM_ROOT = Path("/dev/shm")


@dataclass(frozen=True)
class SystemRegion:
    name: str
    key: str
    offset: int
    byte_size: int
    mapping: mmap.mmap

    def view(self, offset: int, byte_size: int, what: str) -> memoryview:
        """`byte_size` bytes at `offset` within the registered window; InvalidInput when outside it."""
        if offset < 0 or byte_size < 0 or offset + byte_size > self.byte_size:
            raise InvalidInput(
                f"{what}: {byte_size} bytes at offset {offset} do not fit in shared memory region "
                f"'{self.name}' of {self.byte_size} bytes"
            )
        start = self.offset + offset
        return memoryview(self.mapping)[start : start + byte_size]

    def read(self, offset: int, byte_size: int, what: str) -> memoryview:
        return self.view(offset, byte_size, what)

    def write(self, offset: int, data: bytes | memoryview, what: str) -> None:
        self.view(offset, len(data), what)[:] = data


class Region(Protocol):
    """A registered region, system or CUDA: bounds-checked reads and writes within its window."""

    @property
    def name(self) -> str: ...

    @property
    def byte_size(self) -> int: ...

    def read(self, offset: int, byte_size: int, what: str) -> bytes | memoryview: ...

    def write(self, offset: int, data: bytes | memoryview, what: str) -> None: ...


class SharedMemoryRegions:
    """name → region, thread-safe; the gRPC and HTTP transports share one instance."""

    def __init__(self, shm_root: Path = SHM_ROOT, gpu_count: int = 0) -> None:
        self._root = shm_root
        self._gpu_count = gpu_count
        self._system: dict[str, SystemRegion] = {}
        self._cuda: dict[str, CudaRegion] = {}
        self._runtime: CudaRuntime | None = None
        self._lock = threading.Lock()

    # ---- system shared memory -----------------------------------------------------------------

    def register_system(self, name: str, key: str, offset: int, byte_size: int) -> None:
        if not name:
            raise InvalidInput("a shared memory region needs a name")
        with self._lock:
            if name in self._system:
                raise AlreadyExists(f"shared memory region '{clip(name)}' already in manager")
        path = self._path(key)
        mapping = _map(path, key, offset, byte_size)
        region = SystemRegion(name, key, offset, byte_size, mapping)
        with self._lock:
            if name in self._system:  # registered by another call meanwhile
                raise AlreadyExists(f"shared memory region '{clip(name)}' already in manager")
            self._system[name] = region

    def unregister_system(self, name: str = "") -> None:
        """One region, or every region when `name` is empty (Triton's semantics); unknown names are no-ops."""
        with self._lock:
            if name:
                self._system.pop(name, None)
            else:
                self._system.clear()

    def system_status(self, name: str = "") -> list[SystemRegion]:
        with self._lock:
            if not name:
                return sorted(self._system.values(), key=lambda r: r.name)
            region = self._system.get(name)
        if region is None:
            raise NotFound(f"Unable to find system shared memory region: '{clip(name)}'")
        return [region]

    def region(self, name: str, what: str) -> Region:
        """A registered region, system or CUDA, by name; InvalidInput when there is none."""
        with self._lock:
            system, cuda = self._system.get(name), self._cuda.get(name)
        region: Region | None = system if system is not None else cuda
        if region is None:
            raise InvalidInput(f"{what}: shared memory region '{clip(name)}' is not registered")
        return region

    # ---- CUDA shared memory -------------------------------------------------------------------

    def register_cuda(self, name: str, raw_handle: bytes, device_id: int, byte_size: int) -> None:
        if self._gpu_count == 0:
            raise FailedPrecondition(
                f"CUDA shared memory region '{clip(name)}' cannot be registered: CUDA shared memory "
                "needs a GPU and this server has none; use system shared memory"
            )
        if not name or byte_size <= 0:
            raise InvalidInput(
                f"CUDA shared memory region '{clip(name)}': a name and a byte_size > 0 are needed"
            )
        if not 0 <= device_id < self._gpu_count:
            raise InvalidInput(f"CUDA shared memory region '{clip(name)}': no GPU {device_id} on this server")
        with self._lock:
            if name in self._cuda or name in self._system:
                raise AlreadyExists(f"shared memory region '{clip(name)}' already in manager")
            runtime = self._runtime = self._runtime or CudaRuntime()
        what = f"CUDA shared memory region '{clip(name)}'"
        region = CudaRegion(name, device_id, byte_size, runtime.open(raw_handle, device_id, what), runtime)
        with self._lock:
            if name in self._cuda or name in self._system:
                region.close()
                raise AlreadyExists(f"shared memory region '{clip(name)}' already in manager")
            self._cuda[name] = region

    def unregister_cuda(self, name: str = "") -> None:
        """One region, or every one when `name` is empty; the IPC mapping is closed."""
        with self._lock:
            gone = [self._cuda.pop(name)] if name in self._cuda else [] if name else list(self._cuda.values())
            if not name:
                self._cuda.clear()
        for region in gone:
            region.close()

    def cuda_status(self, name: str = "") -> list[CudaRegion]:
        with self._lock:
            if not name:
                return sorted(self._cuda.values(), key=lambda r: r.name)
            region = self._cuda.get(name)
        if region is None:
            raise NotFound(f"Unable to find cuda shared memory region: '{clip(name)}'")
        return [region]

    def _path(self, key: str) -> Path:
        bare = key[1:] if key.startswith("/") else key
        if not bare or "/" in bare or bare in (".", "..") or "\0" in bare:
            raise InvalidInput(
                f"shared memory key '{clip(key)}' must name an object in {self._root} ('/name', no other '/')"
            )
        return self._root / bare


def _map(path: Path, key: str, offset: int, byte_size: int) -> mmap.mmap:
    if offset < 0 or byte_size <= 0:
        raise InvalidInput(
            f"shared memory region of key '{clip(key)}': offset {offset}, byte_size {byte_size}"
        )
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
    except OSError as exc:
        raise InvalidInput(f"Unable to open shared memory region: '{clip(key)}' ({exc.strerror})") from None
    try:
        size = os.fstat(fd).st_size
        if offset + byte_size > size:
            raise InvalidInput(
                f"shared memory region of key '{clip(key)}': offset {offset} + byte_size {byte_size} "
                f"exceeds the object's {size} bytes"
            )
        return mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    finally:
        os.close(fd)
