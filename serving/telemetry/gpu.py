"""GPU memory and utilisation, read at scrape time: `serving_gpu_*` series of one `GpuCollector`.

A `GpuProbe` reads every device: NVML (pynvml) where it initialises, else torch.cuda (memory only).
docs/metrics.md lists the series.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GpuReading:
    index: int
    used_bytes: int
    total_bytes: int
    utilization: float | None  # 0..1 over the driver's last sample period; None when unknown


class GpuProbe(Protocol):
    def read(self) -> list[GpuReading]: ...


class _NvmlProbe:
    def __init__(self, nvml: Any) -> None:
        self._nvml = nvml
        nvml.nvmlInit()

    def read(self) -> list[GpuReading]:
        readings = []
        for index in range(self._nvml.nvmlDeviceGetCount()):
            handle = self._nvml.nvmlDeviceGetHandleByIndex(index)
            memory = self._nvml.nvmlDeviceGetMemoryInfo(handle)
            rates = self._nvml.nvmlDeviceGetUtilizationRates(handle)
            readings.append(GpuReading(index, int(memory.used), int(memory.total), rates.gpu / 100.0))
        return readings


class _TorchProbe:
    def __init__(self, torch: Any) -> None:
        self._cuda = torch.cuda

    def read(self) -> list[GpuReading]:
        readings = []
        for index in range(self._cuda.device_count()):
            free, total = self._cuda.mem_get_info(index)
            readings.append(GpuReading(index, int(total - free), int(total), None))
        return readings


def detect_gpu_probe() -> GpuProbe | None:
    """NVML (pynvml) when torch sees a CUDA device and pynvml imports, else torch.cuda.mem_get_info
    (memory only); None without torch or without a CUDA device."""
    if importlib.util.find_spec("torch") is None:
        return None
    torch = importlib.import_module("torch")
    if not torch.cuda.is_available():
        return None
    if importlib.util.find_spec("pynvml") is not None:
        try:
            return _NvmlProbe(importlib.import_module("pynvml"))
        except Exception:  # a driver without NVML: fall back to torch
            log.warning("pynvml is installed but NVML failed to initialise; GPU utilisation not exported")
    return _TorchProbe(torch)


class GpuCollector(Collector):
    def __init__(self, probe: GpuProbe) -> None:
        self._probe = probe

    def collect(self) -> Iterator[Metric]:
        try:
            readings = self._probe.read()
        except Exception:
            log.exception("reading GPU metrics failed")
            return
        used = GaugeMetricFamily("serving_gpu_memory_used_bytes", "GPU memory in use.", labels=["gpu"])
        total = GaugeMetricFamily("serving_gpu_memory_total_bytes", "GPU memory in total.", labels=["gpu"])
        util = GaugeMetricFamily(
            "serving_gpu_utilization_ratio", "Fraction of time a GPU kernel was running.", labels=["gpu"]
        )
        for reading in readings:
            used.add_metric([str(reading.index)], reading.used_bytes)
            total.add_metric([str(reading.index)], reading.total_bytes)
            if reading.utilization is not None:
                util.add_metric([str(reading.index)], reading.utilization)
        yield from (used, total, util)
