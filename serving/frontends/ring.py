"""`SlotRing`: one front-end's shared memory, a file in /dev/shm cut into equal slots.

The front-end creates it, writes a request's input tensors once into a free slot, and names the slot to
the worker; the worker maps the same file and reads the tensors in place (numpy views, no copy, nothing
pickled), then writes the outputs after the inputs in the same slot. A slot is free again once the
front-end has copied the reply out and the worker has released every view of its inputs. The file is
unlinked as soon as the worker has mapped it, so nothing is left behind when either process dies.
"""

from __future__ import annotations

import mmap
import os
import tempfile
from collections import deque
from pathlib import Path

ALIGN = 64  # every tensor starts on a cache line
DEFAULT_SLOTS = 128
DEFAULT_SLOT_BYTES = 1 << 20  # larger requests go to the worker through the socket (see frontend.py)


def aligned(offset: int) -> int:
    return (offset + ALIGN - 1) // ALIGN * ALIGN


def ring_folder() -> Path:
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())


class SlotRing:
    def __init__(self, path: Path, slots: int, slot_bytes: int, *, create: bool) -> None:
        if slots < 1 or slot_bytes < ALIGN or slot_bytes % ALIGN:
            raise ValueError(f"a ring needs >= 1 slot of a multiple of {ALIGN} bytes")
        self.path = path
        self.slots = slots
        self.slot_bytes = slot_bytes
        flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
        fd = os.open(path, flags, 0o600)
        try:
            if create:
                os.ftruncate(fd, slots * slot_bytes)
            elif os.fstat(fd).st_size != slots * slot_bytes:
                raise ValueError(f"{path} is not a ring of {slots} × {slot_bytes} bytes")
            self.memory = mmap.mmap(fd, slots * slot_bytes)
        finally:
            os.close(fd)
        self._free: deque[int] = deque(range(slots))

    @classmethod
    def create(cls, slots: int = DEFAULT_SLOTS, slot_bytes: int = DEFAULT_SLOT_BYTES) -> SlotRing:
        path = ring_folder() / f"serving-frontend-{os.getpid()}-{os.urandom(4).hex()}"
        return cls(path, slots, slot_bytes, create=True)

    def unlink(self) -> None:
        """Remove the file; both mappings stay valid."""
        self.path.unlink(missing_ok=True)

    def start(self, slot: int) -> int:
        """The byte offset of `slot` in the ring."""
        return slot * self.slot_bytes

    # ---- the front-end's side: which slots are free --------------------------------------------

    def acquire(self) -> int | None:
        """A free slot, or None when every slot is in use."""
        return self._free.popleft() if self._free else None

    def release(self, slot: int) -> None:
        self._free.append(slot)

    @property
    def free(self) -> int:
        return len(self._free)
