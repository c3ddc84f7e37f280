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

CUDA shared memory (`CudaSharedMemoryRegister`) needs a GPU; on a server without one it is refused with
FAILED_PRECONDITION saying so.
"""

from __future__ import annotations

import mmap
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from serving.errors import AlreadyExists, FailedPrecondition, InvalidInput, NotFound
from serving.quoting import clip

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


class SharedMemoryRegions:
    """name → region, thread-safe; the gRPC and HTTP transports share one instance."""

    def __init__(self, shm_root: Path = SHM_ROOT, gpu_count: int = 0) -> None:
        self._root = shm_root
        self._gpu_count = gpu_count
        self._system: dict[str, SystemRegion] = {}
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

    def system(self, name: str, what: str) -> SystemRegion:
        with self._lock:
            region = self._system.get(name)
        if region is None:
            raise InvalidInput(f"{what}: shared memory region '{clip(name)}' is not registered")
        return region

    # ---- CUDA shared memory -------------------------------------------------------------------

    def register_cuda(self, name: str, device_id: int, byte_size: int) -> None:
        if self._gpu_count == 0:
            raise FailedPrecondition(
                f"CUDA shared memory region '{clip(name)}' cannot be registered: CUDA shared memory "
                "needs a GPU and this server has none; use system shared memory"
            )
        raise FailedPrecondition(
            "CUDA shared memory is not implemented yet on this server; use system shared memory"
        )

    def _path(self, key: str) -> Path:
        bare = key[1:] if key.startswith("/") else key
        if not bare or "/" in bare or bare in (".", "..") or "\0" in bare:
            raise InvalidInput(
                f"shared memory key '{clip(key)}' must name an object in {self._root} "
                "('/name', no other '/')"
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
