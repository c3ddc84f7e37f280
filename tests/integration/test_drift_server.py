"""Prediction drift detection with the digits model, through the real server and its /metrics.

Every request carries one image (one row), so "requests" and "rows" are the same count here. The
drift window is the default (the last 2,000 requests); the reference is the version folder's
reference.json (predictions on the 450-image test split). Scores are computed every 0.1 s
(`--drift-interval 0.1`) so that /metrics, read after each chunk of requests, reflects every request sent.

In-distribution traffic resamples the test split (seeded); the shifts are images of digits 0-3 only
(label shift) and inverted images 16 - x (covariate shift). docs/metrics.md records the numbers.
"""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import tritonclient.grpc.aio as grpcclient

from tests.servers import ServerProcess, start_server

pytestmark = pytest.mark.integration

DRIFT_INTERVAL_S = 0.1
SETTLE_S = 2.5 * DRIFT_INTERVAL_S  # long enough for a scoring pass after the last response
IN_DISTRIBUTION = 5000
ALERT_WITHIN = 1000
CHUNK = 25  # shifted requests between two reads of /metrics: the resolution of "requests until alert"
CONCURRENCY = 16
Images = npt.NDArray[np.float32]


@pytest.fixture(scope="module")
def digits_server(example_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("drift_server") / "server.log"
    server = start_server(
        example_models,
        log,
        "--load-model",
        "digits",
        "--drift-interval",
        str(DRIFT_INTERVAL_S),
        "--access-log-sample-rate",
        "0",
    )
    yield server
    assert server.stop() == 0, server.log()[-4000:]


@pytest.fixture(scope="module")
def test_set(example_models: Path) -> tuple[Images, npt.NDArray[np.int64]]:
    data = np.load(example_models / "digits" / "test_set.npz")
    return data["X_test"].astype(np.float32), data["y_test"].astype(np.int64)


def drift(metrics_url: str, version: str) -> dict[str, float]:
    """serving_drift_* of digits `version`, output probabilities: scores by statistic, alert, window_rows."""
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode()
    found: dict[str, float] = {}
    for match in re.finditer(r"^serving_drift_(score|alert|window_rows)\{([^}]*)\} (\S+)$", text, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2)))
        if labels["model"] == "digits" and labels["version"] == version:
            found[labels.get("statistic") or match.group(1)] = float(match.group(3))
    return found


async def send(client: grpcclient.InferenceServerClient, images: Images, version: str) -> None:
    """One request per image, CONCURRENCY at a time; every one must succeed."""
    slots = asyncio.Semaphore(CONCURRENCY)

    async def one(image: Images) -> None:
        tensor = grpcclient.InferInput("input", [1, 64], "FP32")
        tensor.set_data_from_numpy(image[None, :])
        async with slots:
            await client.infer("digits", [tensor], model_version=version)

    await asyncio.gather(*(one(image) for image in images))


async def requests_until_alert(server: ServerProcess, version: str, pool: Images, seed: int) -> int:
    rng = np.random.default_rng(seed)
    client = grpcclient.InferenceServerClient(server.grpc_address)
    try:
        for sent in range(CHUNK, 2 * ALERT_WITHIN + 1, CHUNK):
            await send(client, pool[rng.integers(0, len(pool), CHUNK)], version)
            await asyncio.sleep(SETTLE_S)
            if drift(server.metrics_url, version).get("alert") == 1.0:
                return sent
    finally:
        await client.close()
    return -1


async def in_distribution(server: ServerProcess, version: str, images: Images, n: int) -> dict[str, float]:
    """Send `n` resampled test images; the highest score of each statistic seen (alert: 1 if ever)."""
    rng = np.random.default_rng(0)
    client = grpcclient.InferenceServerClient(server.grpc_address)
    highest: dict[str, float] = {}
    try:
        for _ in range(n // 250):
            await send(client, images[rng.integers(0, len(images), 250)], version)
            await asyncio.sleep(SETTLE_S)
            for key, value in drift(server.metrics_url, version).items():
                highest[key] = max(highest.get(key, 0.0), value)
    finally:
        await client.close()
    return highest


async def test_no_alert_in_distribution_then_label_shift_alerts(
    digits_server: ServerProcess, test_set: tuple[Images, npt.NDArray[np.int64]]
) -> None:
    images, labels = test_set
    started = time.perf_counter()
    highest = await in_distribution(digits_server, "1", images, IN_DISTRIBUTION)
    print(
        f"\nv1: {IN_DISTRIBUTION} in-distribution requests in {time.perf_counter() - started:.1f}s, highest {highest}"
    )
    assert highest.get("alert", 0.0) == 0.0, highest
    assert highest["window_rows"] >= 1800  # the window filled up (2,000 requests, less one bucket)
    assert max(highest[s] for s in ("psi", "js_distance", "confidence_psi")) < 0.1, highest

    only_0_to_3 = images[labels <= 3]
    needed = await requests_until_alert(digits_server, "1", only_0_to_3, seed=1)
    print(f"v1: digits 0-3 only: alert after {needed} requests")
    assert 0 < needed <= ALERT_WITHIN


async def test_inverted_images_alert(
    digits_server: ServerProcess, test_set: tuple[Images, npt.NDArray[np.int64]]
) -> None:
    images, _ = test_set
    highest = await in_distribution(digits_server, "2", images, 2000)  # a full in-distribution window first
    assert highest.get("alert", 0.0) == 0.0, highest
    needed = await requests_until_alert(digits_server, "2", 16.0 - images, seed=2)
    print(f"v2: inverted images: alert after {needed} requests")
    assert 0 < needed <= ALERT_WITHIN
