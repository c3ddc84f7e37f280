"""Start the real server as a subprocess on loopback and wait until it says it is ready.

The server runs in its own process, as it does in production: its port comes from the `ready` log
line (it binds port 0), its log is kept in a file that failures print.

SERVING_TEST_FRONTENDS=N runs every such server with `--frontends N` (unless a test names the flag
itself), so the whole integration suite can be run against the multi-process server.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# groups 1-3 as before; 4: the HTTP address ("off", or absent in an older server's line)
FRONTENDS_ENV = "SERVING_TEST_FRONTENDS"
READY = re.compile(r"ready grpc=(\S+):(\d+) metrics=(\S+)(?: admin=\S+)?(?: http=(\S+))?")


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    log_path: Path
    grpc_address: str
    metrics_address: str | None
    http_address: str | None = None  # host:port of KServe v2 REST; None when HTTP is off

    @property
    def http_url(self) -> str:
        assert self.http_address is not None, "this server runs without HTTP (--http-port -1)"
        return f"http://{self.http_address}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.metrics_address}/metrics"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_server(
    repository: Path, log_path: Path, *extra: str, timeout: float = 180.0, load_all: bool = True
) -> ServerProcess:
    """`load_all`: ask for every model at start (`--load-model *`, Triton's way in explicit mode, the
    default mode) unless `extra` names models itself; False starts with whatever the flags say."""
    loads = ["--load-model", "*"] if load_all and "--load-model" not in extra else []
    frontends = os.environ.get(FRONTENDS_ENV)
    if frontends and "--frontends" not in extra:
        loads += ["--frontends", frontends]
    args = [
        sys.executable,
        "-m",
        "serving",
        "serve",
        "--model-repository",
        str(repository),
        "--host",
        "127.0.0.1",
        "--grpc-port",
        "0",
        "--metrics-port",
        "0",
        "--http-port",
        "0",
        *loads,
        *extra,
    ]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace")
        match = READY.search(text)
        if match:
            metrics = None if match.group(3) == "off" else match.group(3)
            http = None if match.group(4) in (None, "off") else match.group(4)
            return ServerProcess(process, log_path, f"{match.group(1)}:{match.group(2)}", metrics, http)
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{text}")
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"server not ready after {timeout}s:\n{log_path.read_text(errors='replace')}")


def serving(repository: Path, log_path: Path, *extra: str) -> Iterator[ServerProcess]:
    """For a fixture: `yield from serving(...)` starts the server, hands it over, and at the end stops it
    and checks it exited cleanly (code 0), printing the end of its log when not."""
    process = start_server(repository, log_path, *extra)
    yield process
    assert process.stop() == 0, process.log()[-3000:]
