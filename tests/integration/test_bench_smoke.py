"""The served-vs-raw benchmark runs end to end (briefly) against the real server; figures are not judged."""

from __future__ import annotations

import pytest

from loadtests import served_vs_raw
from tests.conftest import MODELS
from tests.servers import ServerProcess

pytestmark = pytest.mark.integration


def test_served_vs_raw_prints_side_by_side_ratios(
    live_server: ServerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    code = served_vs_raw.main(
        [
            "--url",
            live_server.grpc_address,
            "--model-repository",
            str(MODELS),
            "--model",
            "digits",
            "--version",
            "2",
            "--duration",
            "0.3",
            "--concurrency",
            "4",
            "--batch",
            "8",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "model digits v2 (pytorch_libtorch)" in out
    for line in (
        "raw    batch 1",
        "raw    batch 8",
        "served c=4",
        "served / raw batch 1",
        "served p50 / raw batch-1 p50",
    ):
        assert line in out, out
