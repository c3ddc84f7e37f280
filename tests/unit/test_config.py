"""Settings from flags: validated, with messages naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.cli import build_parser, settings_from
from serving.config import ServerSettings


def test_flags_become_settings(tmp_path: Path) -> None:
    args = build_parser().parse_args(
        ["serve", "--model-repository", str(tmp_path), "--grpc-port", "0", "--metrics-port", "-1", "--torch-threads", "1"]
    )
    settings = settings_from(args)
    assert settings.model_repository == tmp_path
    assert settings.grpc_port == 0
    assert settings.metrics_port is None
    assert settings.torch_threads == 1
    assert settings.switch_interval_us == 500  # the measured default (docs/performance.md, round 6)


def test_torch_threads_default_is_torchs_own(tmp_path: Path) -> None:
    assert settings_from(build_parser().parse_args(["serve", "--model-repository", str(tmp_path)])).torch_threads is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"torch_threads": 0}, "torch_threads: must be >= 1"),
        ({"switch_interval_us": 0}, r"switch_interval_us: must be within \[1, 1000000\], got 0"),
        ({"grpc_port": 70000}, "grpc_port: 70000 is not a port number"),
        ({"log_format": "xml"}, "log_format: 'xml'"),
        ({"max_message_bytes": 10}, "max_message_bytes: 10 is too small"),
    ],
)
def test_bad_settings_name_the_field(tmp_path: Path, overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ServerSettings(model_repository=tmp_path, **overrides)  # type: ignore[arg-type]


def test_missing_repository_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="model_repository: .* is not a directory"):
        ServerSettings(model_repository=tmp_path / "nope")
