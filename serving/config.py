"""Typed, validated server settings: built from flags and `SERVING_*` environment variables by the CLI
and passed in explicitly; nothing here is read at import time."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from serving.api.tls import ServerTls, check_server_files

MODEL_CONTROL_MODES = ("none", "explicit", "poll")
LOG_FORMATS = ("text", "json")
MAX_FRONTENDS = 64


@dataclass(frozen=True)
class ServerSettings:
    model_repository: Path
    host: str = "127.0.0.1"
    grpc_port: int = 8001  # 0 = any free port (tests)
    http_port: int | None = 8000  # KServe v2 REST; None = no HTTP endpoint; 0 = any free port
    metrics_port: int | None = 8002  # None = no /metrics endpoint
    model_control_mode: str = "explicit"
    load_models: tuple[str, ...] = ()  # explicit mode: models to load at start ('*' = all; empty = none)
    max_message_bytes: int = 64 * 1024 * 1024
    grace_period_s: float = 30.0
    log_format: str = "text"
    log_level: str = "INFO"
    access_log_sample_rate: float = 0.01  # fraction of successful requests in the access log; errors: all
    drift_interval_s: float = 10.0  # how often drift scores are computed (off the request path)
    torch_threads: int | None = None  # torch's intra-op CPU threads (process-wide); None = torch's default
    switch_interval_us: int = 500  # the serving process's GIL switch interval (sys.setswitchinterval)
    repository_poll_secs: float = 15.0  # poll mode: how often the repository is scanned
    admin_port: int | None = None  # None = the admin service shares the gRPC port; 0 = any free port
    admin_host: str = "127.0.0.1"  # where a separate admin port binds
    admin_token_file: Path | None = None  # admin calls need `authorization: Bearer <token>` when set
    tls_cert: Path | None = None  # with tls_key: every port but /metrics serves TLS only
    tls_key: Path | None = None
    tls_client_ca: Path | None = None  # mutual TLS: clients need a certificate signed by this CA
    max_inputs_per_request: int = 256  # inputs, outputs or raw contents one ModelInfer may name
    max_concurrent_rpcs: int = 2048  # inference calls in flight; beyond: RESOURCE_EXHAUSTED; 0 = unlimited
    default_max_queue_size: int = 1024  # a model's queue limit when its config sets none; 0 = unbounded
    policy_history_limit: int = 1000  # traffic policy history entries kept per model (rotated)
    frontends: int = 1  # gRPC front-end processes; 1 = one process serves everything (serving/frontends)
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.model_repository.is_dir():
            raise ValueError(f"model_repository: {self.model_repository} is not a directory")
        ports = (
            ("grpc_port", self.grpc_port),
            ("http_port", self.http_port),
            ("metrics_port", self.metrics_port),
            ("admin_port", self.admin_port),
        )
        for name, port in ports:
            if port is not None and not 0 <= port <= 65535:
                raise ValueError(f"{name}: {port} is not a port number")
        if self.model_control_mode not in MODEL_CONTROL_MODES:
            raise ValueError(
                f"model_control_mode: '{self.model_control_mode}' is not one of {MODEL_CONTROL_MODES}"
            )
        if self.log_format not in LOG_FORMATS:
            raise ValueError(f"log_format: '{self.log_format}' is not one of {LOG_FORMATS}")
        if self.max_message_bytes < 1024:
            raise ValueError(f"max_message_bytes: {self.max_message_bytes} is too small (minimum 1024)")
        if self.grace_period_s < 0:
            raise ValueError(f"grace_period_s: must be >= 0, got {self.grace_period_s}")
        if not self.repository_poll_secs > 0:
            raise ValueError(f"repository_poll_secs: must be > 0, got {self.repository_poll_secs}")
        if self.admin_token_file is not None and not self.admin_token_file.is_file():
            raise ValueError(f"admin_token_file: {self.admin_token_file} is not a file")
        check_server_files(self.tls_cert, self.tls_key, self.tls_client_ca)
        if not 0.0 <= self.access_log_sample_rate <= 1.0:
            rate = self.access_log_sample_rate
            raise ValueError(f"access_log_sample_rate: must be within [0, 1], got {rate}")
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ValueError(f"torch_threads: must be >= 1, got {self.torch_threads}")
        if not 1 <= self.switch_interval_us <= 1_000_000:
            interval = self.switch_interval_us
            raise ValueError(f"switch_interval_us: must be within [1, 1000000], got {interval}")
        if self.max_inputs_per_request < 1:
            raise ValueError(f"max_inputs_per_request: must be >= 1, got {self.max_inputs_per_request}")
        for name, limit in (
            ("max_concurrent_rpcs", self.max_concurrent_rpcs),
            ("default_max_queue_size", self.default_max_queue_size),
        ):
            if limit < 0:
                raise ValueError(f"{name}: must be >= 0 (0 = unlimited), got {limit}")
        if self.policy_history_limit < 1:
            raise ValueError(f"policy_history_limit: must be >= 1, got {self.policy_history_limit}")
        if not 1 <= self.frontends <= MAX_FRONTENDS:
            raise ValueError(f"frontends: must be within [1, {MAX_FRONTENDS}], got {self.frontends}")
        if not self.drift_interval_s > 0:
            raise ValueError(f"drift_interval_s: must be > 0, got {self.drift_interval_s}")

    @property
    def tls(self) -> ServerTls | None:
        """The ports' TLS, or None for plaintext (checked when the settings were made)."""
        return check_server_files(self.tls_cert, self.tls_key, self.tls_client_ca)
