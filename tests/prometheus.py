"""A real Prometheus server (Debian's `prometheus`) scraping a target on loopback, queried over its HTTP API."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCRAPE_INTERVAL_S = 1.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant vector of `promql` (each item has `metric` labels and `value` [time, "text"])."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def values(self, promql: str, by: str) -> dict[str, float]:
        """`promql`'s samples keyed by the label `by`."""
        return {item["metric"].get(by, ""): float(item["value"][1]) for item in self.query(promql)}

    def scalar(self, promql: str) -> float | None:
        result = self.query(promql)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def number(self, promql: str) -> float:
        """`promql`'s single sample, which must exist."""
        value = self.scalar(promql)
        assert value is not None, f"{promql}: no sample"
        return value

    def wait_for(
        self, promql: str, check: Callable[[float | None], bool], timeout_s: float = 30.0
    ) -> float | None:
        """Poll `promql` (a single sample) until `check(value)`; the last value, asserting on timeout."""
        deadline = time.monotonic() + timeout_s
        value = self.scalar(promql)
        while not check(value):
            assert time.monotonic() < deadline, f"{promql} = {value} after {timeout_s}s\n{self.log()[-2000:]}"
            time.sleep(0.25)
            value = self.scalar(promql)
        return value

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def run_prometheus(target: str, workdir: Path, job: str = "serving") -> Iterator[Prometheus]:
    """Start Prometheus scraping `target` (host:port) every second; stop it afterwards."""
    binary = shutil.which("prometheus")
    assert binary, "prometheus is not installed (apt-get install prometheus)"
    config = workdir / "prometheus.yml"
    config.write_text(
        "global:\n"
        f"  scrape_interval: {SCRAPE_INTERVAL_S:g}s\n"
        f"  evaluation_interval: {SCRAPE_INTERVAL_S:g}s\n"
        "scrape_configs:\n"
        f"  - job_name: {job}\n"
        f"    static_configs: [{{targets: ['{target}']}}]\n"
    )
    port = free_port()
    log_path = workdir / "prometheus.log"
    args = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT)
    prometheus = Prometheus(f"http://127.0.0.1:{port}", process, log_path)
    try:
        _wait_ready(prometheus)
        yield prometheus
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_ready(prometheus: Prometheus, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if prometheus.process.poll() is not None:
            raise RuntimeError(f"prometheus exited with {prometheus.process.returncode}:\n{prometheus.log()}")
        try:
            with urllib.request.urlopen(f"{prometheus.url}/-/ready", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"prometheus not ready after {timeout_s}s:\n{prometheus.log()}")
