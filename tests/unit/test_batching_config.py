"""config.pbtxt's `batching.*` parameters: Triton's fixed delay on request, inline runs below a batch time."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.backends.base import Placement
from serving.errors import ModelConfigError
from serving.lifecycle.repository import ModelRepository, ModelSpec, version_source
from serving.lifecycle.version import (
    DEFAULT_INLINE_BELOW_US,
    ModelVersion,
    VersionState,
    batching_policy,
    inline_below_s,
)
from serving.parameters import flag
from tests.model_factory import add_model_config, write_add_repository
from tests.unit.fake_backend import FakeBackend


def spec_with(root: Path, parameters: dict[str, str]) -> ModelSpec:
    extra = " ".join(
        f'parameters {{ key: "{key}" value: {{ string_value: "{value}" }} }}'
        for key, value in parameters.items()
    )
    config = add_model_config(
        "add", batching="dynamic_batching { max_queue_delay_microseconds: 500 }", extra=extra
    )
    return ModelRepository(write_add_repository(root, config=config)).read("add")


def test_work_conserving_unless_strict_delay_is_asked_for(tmp_path: Path) -> None:
    assert not batching_policy(spec_with(tmp_path / "a", {})).strict_delay
    assert batching_policy(spec_with(tmp_path / "b", {"batching.strict_delay": "true"})).strict_delay
    assert not batching_policy(spec_with(tmp_path / "c", {"batching.strict_delay": "False"})).strict_delay


def test_inline_threshold_defaults_and_can_be_set_or_turned_off(tmp_path: Path) -> None:
    assert inline_below_s(spec_with(tmp_path / "a", {})) == DEFAULT_INLINE_BELOW_US / 1e6
    assert inline_below_s(spec_with(tmp_path / "b", {"batching.inline_below_us": "50"})) == 50e-6
    assert inline_below_s(spec_with(tmp_path / "c", {"batching.inline_below_us": "0"})) == 0.0


@pytest.mark.parametrize(
    ("key", "value"), [("batching.strict_delay", "yes"), ("batching.inline_below_us", "-5")]
)
async def test_a_malformed_batching_parameter_fails_the_load_naming_it(
    tmp_path: Path, key: str, value: str
) -> None:
    spec = spec_with(tmp_path, {key: value})
    version = ModelVersion(spec, version_source(spec, 1), [Placement("cpu")])
    backend = FakeBackend()
    await version.load(lambda *_: backend)
    assert backend.batches == []  # refused before any warm-up ran
    assert version.state is VersionState.FAILED and key in version.reason


@pytest.mark.parametrize(
    ("parameters", "expected"),
    [({}, False), ({"k": "true"}, True), ({"k": " TRUE "}, True), ({"k": "False"}, False)],
)
def test_a_flag_parameter_reads_true_or_false_in_any_case(parameters: dict[str, str], expected: bool) -> None:
    assert flag(parameters, "k", "model 'm'") is expected


@pytest.mark.parametrize("value", ["yes", "1", "", "on"])
def test_a_flag_parameter_refuses_anything_else_naming_its_owner_and_key(value: str) -> None:
    message = f"model 'm': parameter 'k' must be \"true\" or \"false\", got {value!r}"
    with pytest.raises(ModelConfigError, match=message):
        flag({"k": value}, "k", "model 'm'")
