"""The servers the bench measures, each a subprocess on 127.0.0.1 that the bench starts and stops.

    ours      python -m serving serve on the bench repository (metrics and drift on: the defaults)
    no-model  grpc.aio + uvloop answering ModelInfer by echoing each input back as an output (parse,
              build, serialise; no model): the transport ceiling;
              ``python -m loadtests.bench_servers noop PORT`` runs it
Each is started on a free port (port 0 where the program reports its port, else one picked free),
waited for until it says it is ready, and stopped with SIGTERM (then SIGKILL).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVICE = "inference.GRPCInferenceService"
OURS_READY = re.compile(r"ready grpc=(\S+):(\d+)")
NOOP_READY = re.compile(r"listening on (\S+):(\d+)")


class BenchServerError(RuntimeError):
    """A bench server did not start (its log's tail is in the message)."""


@dataclass
class Subprocess:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    url: str = ""

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self, timeout_s: float = 20.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def spawn(
    name: str, args: Sequence[str], log_path: Path, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> Subprocess:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    environment = dict(os.environ if env is None else env, PYTHONUNBUFFERED="1")
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            list(args), stdout=log_file, stderr=subprocess.STDOUT, cwd=cwd, env=environment
        )
    return Subprocess(name, process, log_path)


def wait_for(server: Subprocess, ready: Callable[[str], str | None], timeout_s: float) -> Subprocess:
    """Wait until `ready(log text)` gives the server's address; stop it and raise if it never does."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        url = ready(server.log_path.read_text(errors="replace"))
        if url:
            server.url = url
            return server
        if server.process.poll() is not None:
            raise BenchServerError(
                f"{server.name} exited with {server.process.returncode}:\n{server.log_tail()}"
            )
        time.sleep(0.1)
    server.stop()
    raise BenchServerError(f"{server.name} not ready after {timeout_s:.0f}s:\n{server.log_tail()}")


def _address(pattern: re.Pattern[str]) -> Callable[[str], str | None]:
    def ready(text: str) -> str | None:
        match = pattern.search(text)
        return f"127.0.0.1:{match.group(2)}" if match else None

    return ready


def start_ours(
    repository: Path,
    models: Sequence[str],
    log_path: Path,
    timeout_s: float = 180.0,
    *,
    checkout: Path = ROOT,
    extra: Sequence[str] = (),
    name: str = "ours",
) -> Subprocess:
    """Our server from `checkout` (this one, or e.g. a git worktree of another commit), `extra` flags."""
    args = [sys.executable, "-m", "serving", "serve", "--model-repository", str(repository)]
    args += ["--host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "0", "--http-port", "-1"]
    for model in models:
        args += ["--load-model", model]
    args += extra
    return wait_for(spawn(name, args, log_path, cwd=checkout), _address(OURS_READY), timeout_s)


def start_noop(log_path: Path, timeout_s: float = 60.0) -> Subprocess:
    args = [sys.executable, "-m", "loadtests.bench_servers", "noop", "0"]
    return wait_for(spawn("no-model", args, log_path), _address(NOOP_READY), timeout_s)


def rss_bytes(pid: int) -> int:
    """Resident set size of process `pid` (Linux /proc), 0 when it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else 0


def echo_reply(request: bytes) -> bytes:
    """The no-model server's reply: each input back as an output of the same name, shape and bytes."""
    from serving.proto import inference_pb2 as pb

    parsed = pb.ModelInferRequest.FromString(request)
    reply = pb.ModelInferResponse(
        model_name=parsed.model_name, model_version=parsed.model_version, id=parsed.id
    )
    for tensor in parsed.inputs:
        reply.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
    reply.raw_output_contents.extend(parsed.raw_input_contents)
    return reply.SerializeToString()


async def _serve_echo(port: int) -> None:
    """grpc.aio + uvloop, ModelInfer only, bytes in and out: what serving costs with no model at all."""
    import grpc

    async def model_infer(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return echo_reply(request)

    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(model_infer)  # no (de)serialisers: bytes
    service = grpc.method_handlers_generic_handler(SERVICE, {"ModelInfer": handler})
    server.add_generic_rpc_handlers((service,))
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"listening on 127.0.0.1:{bound}", flush=True)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, done.set)
    await done.wait()
    await server.stop(0.5)


def main(argv: Sequence[str]) -> int:
    if len(argv) != 2 or argv[0] != "noop":
        print("usage: python -m loadtests.bench_servers noop PORT", file=sys.stderr)
        return 2
    import uvloop

    uvloop.run(_serve_echo(int(argv[1])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
