"""The `serving` command: `serving serve`, `serving models build`, `serving ctl …` (serving/ctl.py).

Flags use Triton's names where Triton has the flag; every flag also reads `SERVING_<FLAG>` from the
environment (e.g. SERVING_GRPC_PORT), flags winning.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from serving import ctl
from serving.config import LOG_FORMATS, MODEL_CONTROL_MODES, ServerSettings


def _env(name: str, default: Any) -> Any:
    return os.environ.get(f"SERVING_{name.upper()}", default)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="serving", description="KServe v2 / Triton-compatible inference server"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve a model repository over gRPC and HTTP")
    serve.add_argument("--model-repository", type=Path, default=Path(_env("model_repository", "models")))
    serve.add_argument(
        "--host", default=_env("host", "127.0.0.1"), help="address to bind (container: 0.0.0.0)"
    )
    serve.add_argument("--grpc-port", type=int, default=int(_env("grpc_port", 8001)))
    serve.add_argument(
        "--http-port",
        type=int,
        default=int(_env("http_port", 8000)),
        help="KServe v2 REST (HTTP/JSON and binary tensors) port; -1 disables HTTP",
    )
    serve.add_argument(
        "--metrics-port", type=int, default=int(_env("metrics_port", 8002)), help="-1 disables /metrics"
    )
    serve.add_argument(
        "--model-control-mode", choices=MODEL_CONTROL_MODES, default=_env("model_control_mode", "explicit")
    )
    serve.add_argument(
        "--load-model",
        action="append",
        default=[],
        help="explicit mode: load this model at start (repeatable; '*' = all; none given: load none)",
    )
    serve.add_argument(
        "--repository-poll-secs",
        type=float,
        default=float(_env("repository_poll_secs", 15.0)),
        help="poll mode: seconds between repository scans",
    )
    serve.add_argument(
        "--admin-port",
        type=int,
        default=None if _env("admin_port", None) is None else int(_env("admin_port", 0)),
        help="serve the admin API on its own port (default: on the gRPC port)",
    )
    serve.add_argument(
        "--admin-host", default=_env("admin_host", "127.0.0.1"), help="address of --admin-port"
    )
    serve.add_argument(
        "--admin-token-file",
        type=Path,
        default=_env("admin_token_file", None),
        help="admin calls need 'authorization: Bearer <token in this file>'",
    )
    serve.add_argument(
        "--tls-cert", type=Path, default=_env("tls_cert", None), help="server certificate (PEM): TLS only"
    )
    serve.add_argument("--tls-key", type=Path, default=_env("tls_key", None), help="its private key (PEM)")
    serve.add_argument(
        "--tls-client-ca",
        type=Path,
        default=_env("tls_client_ca", None),
        help="mutual TLS: clients must present a certificate signed by this CA (PEM)",
    )
    serve.add_argument(
        "--max-message-bytes", type=int, default=int(_env("max_message_bytes", 64 * 1024 * 1024))
    )
    serve.add_argument(
        "--max-inputs-per-request",
        type=int,
        default=int(_env("max_inputs_per_request", 256)),
        help="a ModelInfer request naming more inputs, outputs or raw contents is refused before decoding",
    )
    serve.add_argument(
        "--grace-period", type=float, default=float(_env("grace_period", 30.0)), help="seconds"
    )
    serve.add_argument(
        "--max-concurrent-rpcs",
        type=int,
        default=int(_env("max_concurrent_rpcs", 2048)),
        help="inference calls in flight at once; more get RESOURCE_EXHAUSTED at once (0 = unlimited)",
    )
    serve.add_argument(
        "--default-max-queue-size",
        type=int,
        default=int(_env("default_max_queue_size", 1024)),
        help="queued requests per model version when its config sets no max_queue_size (0 = unbounded)",
    )
    serve.add_argument(
        "--policy-history-limit",
        type=int,
        default=int(_env("policy_history_limit", 1000)),
        help="traffic policy history entries kept per model (older ones are rotated away)",
    )
    serve.add_argument("--log-format", choices=LOG_FORMATS, default=_env("log_format", "text"))
    serve.add_argument("--log-level", default=_env("log_level", "INFO"))
    serve.add_argument(
        "--access-log-sample-rate",
        type=float,
        default=float(_env("access_log_sample_rate", 0.01)),
        help="fraction (0..1) of successful requests written to the access log; failed ones always are",
    )
    serve.add_argument(
        "--torch-threads",
        type=int,
        default=_env("torch_threads", None),
        help="torch's intra-op CPU threads, for every PyTorch model in the process (default: torch's)",
    )
    serve.add_argument(
        "--switch-interval-us",
        type=int,
        default=int(_env("switch_interval_us", 500)),
        help="how long a model's batch thread may wait for the event loop to hand over Python's GIL "
        "(sys.setswitchinterval, in µs; Python's own default is 5000); docs/performance.md, round 6",
    )
    serve.add_argument(
        "--frontends",
        type=int,
        default=int(_env("frontends", 1)),
        help="gRPC front-end processes sharing --grpc-port (SO_REUSEPORT) before one model worker; "
        "1 = a single process serves everything (docs/architecture.md, Process model)",
    )
    serve.add_argument(
        "--drift-interval",
        type=float,
        default=float(_env("drift_interval", 10.0)),
        help="seconds between drift score computations",
    )

    ctl.add_parser(sub)

    models = sub.add_parser("models", help="example model repository")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    build = models_sub.add_parser("build", help="build the example models (idempotent)")
    build.add_argument("--model-repository", type=Path, default=Path("models"))
    build.add_argument("--force", action="store_true", help="rebuild even when up to date")
    build.add_argument(
        "--allow-build-script",
        action="store_true",
        help="run the repository's own build.py (Python code, run with your rights; default: only the "
        "project's example builder, models/build.py, is run)",
    )
    return parser


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)  # structured fields, e.g. the access log's
        if isinstance(fields, dict):
            entry.update({k: v for k, v in fields.items() if k not in entry})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(fmt: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def settings_from(args: argparse.Namespace) -> ServerSettings:
    return ServerSettings(
        model_repository=args.model_repository,
        host=args.host,
        grpc_port=args.grpc_port,
        http_port=None if args.http_port < 0 else args.http_port,
        metrics_port=None if args.metrics_port < 0 else args.metrics_port,
        model_control_mode=args.model_control_mode,
        load_models=tuple(args.load_model),
        max_message_bytes=args.max_message_bytes,
        max_inputs_per_request=args.max_inputs_per_request,
        grace_period_s=args.grace_period,
        max_concurrent_rpcs=args.max_concurrent_rpcs,
        default_max_queue_size=args.default_max_queue_size,
        policy_history_limit=args.policy_history_limit,
        log_format=args.log_format,
        log_level=args.log_level,
        access_log_sample_rate=args.access_log_sample_rate,
        drift_interval_s=args.drift_interval,
        torch_threads=None if args.torch_threads is None else int(args.torch_threads),
        switch_interval_us=args.switch_interval_us,
        repository_poll_secs=args.repository_poll_secs,
        frontends=args.frontends,
        admin_port=args.admin_port,
        admin_host=args.admin_host,
        admin_token_file=None if args.admin_token_file is None else Path(args.admin_token_file),
        tls_cert=None if args.tls_cert is None else Path(args.tls_cert),
        tls_key=None if args.tls_key is None else Path(args.tls_key),
        tls_client_ca=None if args.tls_client_ca is None else Path(args.tls_client_ca),
    )


async def serve(settings: ServerSettings) -> None:
    from serving.server import create_server

    server = create_server(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    await stop.wait()
    logging.getLogger("serving.server").info("signal received: draining")
    await server.stop()


def _run(coro: Any) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)


PROJECT_BUILDER = Path(__file__).resolve().parent.parent / "models" / "build.py"


def builder_script(repository: Path, allow_build_script: bool) -> Path:
    """The build.py to run: the project's own example builder (models/build.py), or with
    --allow-build-script the repository's own; ValueError saying why otherwise. A build script is
    Python, run with the caller's rights: a repository from elsewhere must not run code by default."""
    script = repository / "build.py"
    if not script.is_file():
        raise ValueError(f"{script} not found")
    if script.resolve() == PROJECT_BUILDER or allow_build_script:
        return script
    raise ValueError(
        f"{script} is not the project's example builder ({PROJECT_BUILDER}): it is code from the model "
        "repository, run with your rights; read it, then run again with --allow-build-script to run it"
    )


def build_models(repository: Path, force: bool, allow_build_script: bool = False) -> int:
    try:
        script = builder_script(repository, allow_build_script)
    except ValueError as exc:
        print(f"serving models build: {exc}", file=sys.stderr)
        return 2
    spec = importlib.util.spec_from_file_location("serving_models_build", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses in the script look their module up here
    spec.loader.exec_module(module)
    started = time.perf_counter()
    module.build(repository, force=force)
    print(f"models built in {time.perf_counter() - started:.1f}s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "models":
        return build_models(args.model_repository, args.force, args.allow_build_script)
    if args.command == "ctl":
        return ctl.run(args)
    try:
        settings = settings_from(args)
    except ValueError as exc:
        print(f"serving serve: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, settings.log_level)
    sys.setswitchinterval(settings.switch_interval_us / 1e6)  # the whole process: set once, here
    log = logging.getLogger("serving.server")
    log.info("Python thread switch interval: %.0f us", sys.getswitchinterval() * 1e6)
    _run(serve(settings))
    return 0
