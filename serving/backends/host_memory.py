"""Page-locking host memory we did not allocate, so a GPU's copy engines read it directly.

`pin_host_memory(memory, what)` registers a whole mapping (the front-ends' slot rings, serving/frontends)
with CUDA through torch's own runtime (`cudaHostRegister`, portable: pinned for every device's
context). torch then reports tensors over it as pinned, so the torch backend copies a lone request's
input from its slot to the device in one DMA instead of staging it through a pinned block first; ONNX
Runtime's host-to-device copies from it are DMAs too.

It returns what undoes the registration (call it once nothing reads the memory any more, and before
it is unmapped), or None when the memory stays pageable: no CUDA build of torch, no device, or the
driver refused (logged). Call it only in a process that uses a GPU: it initialises CUDA.
"""

from __future__ import annotations

import logging
import mmap
from collections.abc import Callable

import numpy as np

log = logging.getLogger("serving.backends")
_PORTABLE = 1  # cudaHostRegisterPortable


def pin_host_memory(memory: mmap.mmap, what: str) -> Callable[[], None] | None:
    try:
        return _register(memory, what)
    except Exception as exc:  # a broken CUDA install must not stop the link: the memory stays pageable
        log.warning("%s stays pageable: the CUDA runtime is not usable (%s)", what, exc)
        return None


def _register(memory: mmap.mmap, what: str) -> Callable[[], None] | None:
    import torch

    if not torch.cuda.is_available():
        log.info("%s stays pageable: torch sees no CUDA device", what)
        return None
    cudart = torch.cuda.cudart()  # type: ignore[no-untyped-call]
    view = np.frombuffer(memory, np.uint8)  # only for its address; the buffer export ends with it
    address, size = int(view.ctypes.data), len(memory)
    del view
    code = int(cudart.cudaHostRegister(address, size, _PORTABLE))
    if code != 0:
        log.warning("%s stays pageable: cudaHostRegister of %d bytes: CUDA error %d", what, size, code)
        return None
    log.info("%s pinned for the GPU (%d MiB)", what, size >> 20)

    def unpin() -> None:
        failed = int(cudart.cudaHostUnregister(address))
        if failed:
            log.warning("%s: cudaHostUnregister failed (CUDA error %d)", what, failed)

    return unpin
