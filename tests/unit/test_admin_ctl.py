"""Admin token parsing and `serving ctl`'s parsing and formatting (no server needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.api.auth import bearer_token, is_protected, read_token
from serving.cli import build_parser
from serving.ctl import UsageError, parse_weights, policy_text, table
from serving.proto import admin_pb2 as apb


def test_bearer_token_from_metadata() -> None:
    assert bearer_token([("authorization", "Bearer abc")]) == "abc"
    assert bearer_token([("x-other", "1"), ("Authorization", "bearer  abc ")]) == "abc"
    assert bearer_token([("authorization", "Basic abc")]) == ""
    assert bearer_token(None) == ""


def test_protected_methods() -> None:
    assert is_protected("/serving.admin.ModelAdmin/SetSplit")
    assert is_protected("/inference.GRPCInferenceService/RepositoryModelLoad")
    assert not is_protected("/inference.GRPCInferenceService/ModelInfer")
    assert not is_protected("/inference.GRPCInferenceService/RepositoryIndex")


def test_read_token(tmp_path: Path) -> None:
    (tmp_path / "t").write_text("  tok-1\n")
    assert read_token(tmp_path / "t") == "tok-1"
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        read_token(tmp_path / "empty")
    with pytest.raises(ValueError, match="cannot read"):
        read_token(tmp_path / "missing")


def test_parse_weights() -> None:
    assert parse_weights(["1=90", "2=10.5", "3=0"]) == {1: 90.0, 2: 10.5, 3: 0.0}
    for bad in (["1"], ["0=5"], ["a=1"], ["1=-1"], ["1=nan"], ["1=1", "1=2"]):
        with pytest.raises(UsageError):
            parse_weights(bad)


def test_policy_text_and_table() -> None:
    policy = apb.Policy(weights={1: 90, 2: 10}, sticky=True, shadow=apb.Shadow(version=3, fraction=0.05))
    assert policy_text(policy) == "1=90 2=10 sticky shadow=3@0.05"
    assert policy_text(apb.Policy(), present=False).startswith("none")
    assert table(("A", "LONGER"), [(1, "x"), (22, "")]) == "A   LONGER\n1   x\n22"


def test_ctl_command_line() -> None:
    args = build_parser().parse_args(["ctl", "split", "digits", "1=90", "2=10", "--sticky"])
    assert (args.url, args.ctl_command, args.model, args.weights, args.sticky) == (
        "127.0.0.1:8001",
        "split",
        "digits",
        ["1=90", "2=10"],
        True,
    )
    args = build_parser().parse_args(["ctl", "--url", "h:1", "shadow", "digits", "3", "--fraction", "0.1"])
    assert (args.url, args.version, args.fraction) == ("h:1", "3", 0.1)
