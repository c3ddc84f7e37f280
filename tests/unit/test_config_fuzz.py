"""Fuzzing config.pbtxt parsing (serving/lifecycle/repository.parse_config) with hypothesis: whatever the
text, it parses into a ModelSpec or raises ModelConfigError, never another exception.

Derandomized, no example database (reproducible in CI). Run with `-s` to see the counts."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving.errors import ModelConfigError
from serving.lifecycle.repository import parse_config
from tests.model_factory import add_model_config

BASE = add_model_config(
    "add",
    extra='instance_group [ { kind: KIND_CPU count: 2 } ]\nparameters { key: "k" value { string_value: "v" } }\n'
    'model_warmup [ { name: "w" batch_size: 1 inputs { key: "x" value { data_type: TYPE_FP32 dims: [ 4 ] '
    "zero_data: true } } } ]",
)
KEYS = [
    "name:", "platform:", "backend:", "max_batch_size:", "input", "output", "name:", "data_type:", "dims:",
    "reshape", "shape:", "optional:", "format:", "label_filename:", "dynamic_batching", "preferred_batch_size:",
    "max_queue_delay_microseconds:", "default_queue_policy", "max_queue_size:", "timeout_action:",
    "default_timeout_microseconds:", "allow_timeout_override:", "priority_levels:", "instance_group", "kind:",
    "count:", "gpus:", "version_policy", "latest", "num_versions:", "specific", "versions:", "all",
    "parameters", "key:", "value", "string_value:", "model_warmup", "batch_size:", "inputs", "zero_data:",
    "random_data:", "input_data_file:", "default_model_filename:",
]  # fmt: skip
VALUES = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(["-1", "0", "1", "8", "4294967296", "9223372036854775808", "1e9", "nan", "inf", "0x10"]),
    st.sampled_from(
        [
            "TYPE_FP32",
            "TYPE_STRING",
            "TYPE_BF16",
            "TYPE_INVALID",
            "KIND_GPU",
            "KIND_CPU",
            "KIND_MODEL",
            "FORMAT_NCHW",
            "REJECT",
            "DELAY",
            "true",
            "false",
        ]
    ),  # fmt: skip
    st.text(max_size=12).map(lambda t: '"' + t.replace("\\", "\\\\").replace('"', '\\"') + '"'),
    st.sampled_from(['"add"', '"onnxruntime_onnx"', '"pytorch_libtorch"', '"../../etc/passwd"', '"/"', '""']),
)
TOKENS = st.one_of(
    st.sampled_from(KEYS), VALUES, st.sampled_from(["{", "}", "[", "]", ",", ":", "<", ">", "#"])
)
FUZZ = settings(
    max_examples=1500,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
OUTCOMES: Counter[str] = Counter()


@st.composite
def mutated_base(draw: st.DrawFn) -> str:
    text = BASE
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(text)))
        cut = draw(st.integers(0, 12))
        text = text[:at] + draw(TOKENS.map(lambda t: f" {t} ") | st.text(max_size=6)) + text[at + cut :]
    return text


CONFIGS = st.one_of(
    st.text(max_size=200),
    st.lists(TOKENS, max_size=40).map(" ".join),
    mutated_base(),
)


@pytest.fixture(scope="module", autouse=True)
def report() -> object:
    yield
    print(f"\nfuzz config.pbtxt: {sum(OUTCOMES.values())} cases, outcomes {dict(OUTCOMES)}")


def test_fuzzed_config_text_gives_a_spec_or_model_config_error(tmp_path: Path) -> None:
    folder = tmp_path / "add"
    folder.mkdir()

    @FUZZ
    @given(CONFIGS)
    def check(text: str) -> None:
        try:
            parse_config(text, folder)
            OUTCOMES["parsed"] += 1
        except ModelConfigError:
            OUTCOMES["ModelConfigError"] += 1

    check()
    assert OUTCOMES["parsed"] > 0  # the strategies reach valid configs too, not only the parser's first error


@pytest.mark.parametrize("value", ["4294967296", "-2147483649", "99999999999999999999"])
def test_an_enum_number_out_of_range_is_a_model_config_error(tmp_path: Path, value: str) -> None:
    """Found by the fuzzing above: protobuf's text parser raises ValueError, not ParseError, for these."""
    folder = tmp_path / "add"
    folder.mkdir()
    text = BASE.replace("data_type: TYPE_FP32", f"data_type: {value}", 1)
    with pytest.raises(ModelConfigError, match="config.pbtxt"):
        parse_config(text, folder)
