"""Unload gives memory back: repeated load/unload cycles of resnet50 end where the first one ended.

Each cycle loads resnet50 (explicit mode), runs one inference per version, unloads it and waits until
it is gone; the server's RSS is read after each unload. Without `malloc_trim` after an unload
(serving/lifecycle/memory.py) RSS grew ~44% in 12 cycles of the ONNX version; with it, it stays within
a few percent. CI runs SERVING_UNLOAD_CYCLES (default 16) of the ONNX version, where the growth showed;
`SERVING_UNLOAD_CYCLES=50 SERVING_UNLOAD_VERSIONS="1 2"` is the issue's full measurement.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tests.servers import ServerProcess, start_server

pytestmark = pytest.mark.integration

CYCLES = int(os.environ.get("SERVING_UNLOAD_CYCLES", "16"))
VERSIONS = os.environ.get("SERVING_UNLOAD_VERSIONS", "1").split()
BOUND = 1.10  # the issue's: within 10% of where the first cycle ended
RETAINED_MB = 100.0  # what an unloaded model may leave resident (allocator caches, imported modules)


@pytest.fixture
def server(example_models: Path, tmp_path: Path) -> Iterator[ServerProcess]:
    repository = tmp_path / "models"
    (repository / "resnet50").mkdir(parents=True)
    shutil.copy(example_models / "resnet50" / "config.pbtxt", repository / "resnet50")
    for version in VERSIONS:
        # hard links: the same 100 MB files, no copy
        shutil.copytree(
            example_models / "resnet50" / version, repository / "resnet50" / version, copy_function=os.link
        )
    process = start_server(repository, tmp_path / "server.log", load_all=False)  # explicit mode, nothing loaded
    yield process
    assert process.stop() == 0, process.log()[-3000:]


def _rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    assert match is not None, status
    return int(match.group(1)) / 1024


def _cycle(client: grpcclient.InferenceServerClient) -> None:
    client.load_model("resnet50")
    images = np.zeros((1, 3, 224, 224), np.uint8)
    for version in VERSIONS:
        tensor = grpcclient.InferInput("images", list(images.shape), "UINT8")
        tensor.set_data_from_numpy(images)
        logits = client.infer("resnet50", [tensor], model_version=version).as_numpy("logits")
        assert logits is not None and logits.shape == (1, 1000)
    client.unload_model("resnet50")
    deadline = time.monotonic() + 60
    while client.is_model_ready("resnet50") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not client.is_model_ready("resnet50"), "resnet50 still ready a minute after its unload"


def test_load_unload_cycles_give_memory_back(server: ServerProcess) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_address)
    try:
        before_load = _rss_mb(server.process.pid)
        after_unload = []
        for _ in range(CYCLES):
            _cycle(client)
            after_unload.append(_rss_mb(server.process.pid))
    finally:
        client.close()
    first, last, peak = after_unload[0], after_unload[-1], max(after_unload)
    print(f"{CYCLES} cycles of resnet50 v{','.join(VERSIONS)}: RSS {before_load:.0f} MB before the first load; "
          f"after unload {first:.0f} MB after cycle 1, "
          f"{last:.0f} MB after cycle {CYCLES} ({100 * (last / first - 1):+.1f}%), peak {peak:.0f} MB")
    assert last <= first * BOUND, after_unload
    # And the unload really gives the model's memory back (its weights alone are ~100 MB per version):
    # without malloc_trim, RSS after an unload stayed ~250 MB above where it started.
    assert last <= before_load + RETAINED_MB, (before_load, after_unload)
