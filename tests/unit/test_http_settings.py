"""`--http-port`: default 8000, -1 turns HTTP off, 0 any free port; out-of-range ports are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.cli import build_parser, settings_from
from serving.config import ServerSettings


def _settings(tmp_path: Path, *flags: str) -> ServerSettings:
    return settings_from(build_parser().parse_args(["serve", "--model-repository", str(tmp_path), *flags]))


def test_http_port_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SERVING_HTTP_PORT", raising=False)
    assert _settings(tmp_path).http_port == 8000
    assert _settings(tmp_path, "--http-port", "-1").http_port is None
    assert _settings(tmp_path, "--http-port", "0").http_port == 0


def test_http_port_must_be_a_port(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="http_port: 70000 is not a port number"):
        ServerSettings(model_repository=tmp_path, http_port=70000)
