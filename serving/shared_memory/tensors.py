"""Tensors in shared memory: where an input's bytes come from and where an output's bytes go.

Triton's parameters, on an input or on a requested output:
    shared_memory_region     the registered region's name
    shared_memory_byte_size  the bytes the tensor occupies (inputs: exactly the tensor's size)
    shared_memory_offset     where it starts within the region's window (default 0)
An input in shared memory carries no `raw_input_contents` entry; an output written to shared memory
carries no bytes in the reply (its shape and datatype still do).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from serving.core.request import ParamValue
from serving.errors import InvalidInput
from serving.shared_memory.regions import Region, SharedMemoryRegions

REGION = "shared_memory_region"
BYTE_SIZE = "shared_memory_byte_size"
OFFSET = "shared_memory_offset"


@dataclass(frozen=True)
class SharedTensor:
    """A tensor's place in a registered region."""

    region: Region
    offset: int
    byte_size: int
    what: str  # "input 'x'" / "output 'y'", for messages

    def read(self) -> bytes | memoryview:
        return self.region.read(self.offset, self.byte_size, self.what)

    def write(self, data: bytes | memoryview) -> None:
        size = len(data)
        if size > self.byte_size:
            raise InvalidInput(
                f"{self.what}: {size} bytes do not fit in the {self.byte_size} bytes given in shared memory "
                f"region '{self.region.name}'"
            )
        self.region.write(self.offset, data, self.what)


def shared_tensor(
    regions: SharedMemoryRegions | None, parameters: Mapping[str, ParamValue], what: str
) -> SharedTensor | None:
    """The tensor's place when its parameters name a region, else None; InvalidInput when malformed."""
    name = parameters.get(REGION)
    if name is None:
        if BYTE_SIZE in parameters or OFFSET in parameters:
            raise InvalidInput(f"{what}: '{BYTE_SIZE}'/'{OFFSET}' given without '{REGION}'")
        return None
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"{what}: parameter '{REGION}' must be a non-empty string")
    byte_size = _count(parameters, BYTE_SIZE, what, required=True)
    offset = _count(parameters, OFFSET, what, required=False)
    if regions is None:
        raise InvalidInput(f"{what}: this endpoint does not serve shared memory")
    return SharedTensor(regions.region(name, what), offset, byte_size, what)


def _count(parameters: Mapping[str, ParamValue], key: str, what: str, required: bool) -> int:
    value = parameters.get(key)
    if value is None:
        if required:
            raise InvalidInput(f"{what}: parameter '{key}' is required with '{REGION}'")
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(f"{what}: parameter '{key}' must be a non-negative integer, got {value!r}")
    return value
