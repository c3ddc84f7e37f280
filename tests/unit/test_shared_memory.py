"""Shared-memory regions made by tritonclient's own helpers: registration, bounds, reads and writes."""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from serving.errors import AlreadyExists, FailedPrecondition, InvalidInput, NotFound
from serving.shared_memory.regions import SharedMemoryRegions
from serving.shared_memory.tensors import shared_tensor

with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)  # pkg_resources deprecation, inside tritonclient
    import tritonclient.utils.shared_memory as shm


@pytest.fixture()
def region() -> Iterator[tuple[str, Any]]:
    key = f"/serving_test_{uuid.uuid4().hex}"
    handle = shm.create_shared_memory_region("data", key, 64)
    yield key, handle
    shm.destroy_shared_memory_region(handle)


def test_input_read_from_a_region_is_the_clients_bytes(region: tuple[str, Any]) -> None:
    key, handle = region
    values = np.arange(8, dtype=np.float32)
    shm.set_shared_memory_region(handle, [values], offset=16)
    regions = SharedMemoryRegions()
    regions.register_system("data", key, 0, 64)
    tensor = shared_tensor(
        regions, {"shared_memory_region": "data", "shared_memory_byte_size": 32, "shared_memory_offset": 16}, "x"
    )
    assert tensor is not None
    assert np.array_equal(np.frombuffer(tensor.read(), dtype=np.float32), values)


def test_output_written_to_a_region_is_read_back_by_the_client(region: tuple[str, Any]) -> None:
    key, handle = region
    regions = SharedMemoryRegions()
    regions.register_system("data", key, 8, 56)  # a window that starts 8 bytes in
    tensor = shared_tensor(regions, {"shared_memory_region": "data", "shared_memory_byte_size": 24}, "y")
    assert tensor is not None
    tensor.write(np.array([1, 2, 3], dtype=np.int64).tobytes())
    back = shm.get_contents_as_numpy(handle, np.int64, [3], offset=8)
    assert back.tolist() == [1, 2, 3]


@pytest.mark.parametrize(
    ("offset", "byte_size"),
    [(0, 65), (60, 8), (64, 1)],
)
def test_reads_outside_the_window_are_refused(region: tuple[str, Any], offset: int, byte_size: int) -> None:
    key, _ = region
    regions = SharedMemoryRegions()
    regions.register_system("data", key, 0, 64)
    params = {"shared_memory_region": "data", "shared_memory_byte_size": byte_size, "shared_memory_offset": offset}
    tensor = shared_tensor(regions, params, "input 'x'")
    assert tensor is not None
    with pytest.raises(InvalidInput, match="do not fit in shared memory region 'data' of 64 bytes"):
        tensor.read()


def test_an_output_larger_than_its_space_is_refused_and_nothing_is_written(region: tuple[str, Any]) -> None:
    key, handle = region
    regions = SharedMemoryRegions()
    regions.register_system("data", key, 0, 64)
    tensor = shared_tensor(regions, {"shared_memory_region": "data", "shared_memory_byte_size": 8}, "output 'y'")
    assert tensor is not None
    with pytest.raises(InvalidInput, match="output 'y': 16 bytes do not fit in the 8 bytes"):
        tensor.write(b"\x01" * 16)
    assert shm.get_contents_as_numpy(handle, np.uint8, [64]).tolist() == [0] * 64


def test_registration_checks_the_object_and_the_name(region: tuple[str, Any], tmp_path: Path) -> None:
    key, _ = region
    regions = SharedMemoryRegions()
    with pytest.raises(InvalidInput, match="exceeds the object's 64 bytes"):
        regions.register_system("data", key, 32, 64)
    with pytest.raises(InvalidInput, match="Unable to open shared memory region"):
        regions.register_system("data", "/no_such_region_" + uuid.uuid4().hex, 0, 8)
    for bad in ("../etc/passwd", "/a/b", "", "/"):
        with pytest.raises(InvalidInput, match="must name an object"):
            regions.register_system("data", bad, 0, 8)
    regions.register_system("data", key, 0, 64)
    with pytest.raises(AlreadyExists, match="already in manager"):
        regions.register_system("data", key, 0, 64)
    assert [r.name for r in regions.system_status()] == ["data"]
    regions.unregister_system("data")
    with pytest.raises(NotFound):
        regions.system_status("data")
    with pytest.raises(InvalidInput, match="not registered"):
        shared_tensor(regions, {"shared_memory_region": "data", "shared_memory_byte_size": 4}, "input 'x'")


def test_a_symlink_in_the_shm_folder_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "secret"
    target.write_bytes(b"s" * 64)
    os.symlink(target, tmp_path / "link")
    regions = SharedMemoryRegions(shm_root=tmp_path)
    with pytest.raises(InvalidInput, match="Unable to open"):
        regions.register_system("r", "/link", 0, 8)


@pytest.mark.parametrize(
    "params",
    [
        {"shared_memory_byte_size": 4},
        {"shared_memory_region": "data"},
        {"shared_memory_region": "data", "shared_memory_byte_size": -1},
        {"shared_memory_region": "data", "shared_memory_byte_size": "4"},
        {"shared_memory_region": "", "shared_memory_byte_size": 4},
    ],
)
def test_malformed_parameters_are_invalid_input(params: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        shared_tensor(SharedMemoryRegions(), params, "input 'x'")


def test_cuda_shared_memory_says_it_needs_a_gpu() -> None:
    with pytest.raises(FailedPrecondition, match="needs a GPU and this server has none"):
        SharedMemoryRegions(gpu_count=0).register_cuda("c", b"\x00" * 64, 0, 64)


def test_a_cuda_handle_that_cannot_be_opened_is_invalid_input_naming_the_cuda_error() -> None:
    """With a GPU claimed but no usable driver here (or a bogus handle on a GPU), opening fails cleanly."""
    regions = SharedMemoryRegions(gpu_count=1)
    with pytest.raises((InvalidInput, FailedPrecondition), match="CUDA"):
        regions.register_cuda("c", b"\x00" * 64, 0, 64)
    with pytest.raises(InvalidInput, match="raw_handle must be 64 bytes"):
        regions.register_cuda("c", b"\x00" * 3, 0, 64)
    with pytest.raises(InvalidInput, match="no GPU 3"):
        regions.register_cuda("c", b"\x00" * 64, 3, 64)
    assert regions.cuda_status() == []
    with pytest.raises(NotFound):
        regions.cuda_status("c")
