"""Our wire contract matches the published protocol: every message, field number, type and RPC we
declare equals tritonclient's own descriptors (Triton's grpc_service.proto / model_config.proto)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from google.protobuf import descriptor as d
from tritonclient.grpc import model_config_pb2 as triton_mc
from tritonclient.grpc import service_pb2 as triton_service

from serving.proto import inference_pb2, model_config_pb2
from tests.servers import ROOT

ROOT_MESSAGES = [m for m in inference_pb2.DESCRIPTOR.message_types_by_name]


def _field_signature(field: d.FieldDescriptor) -> tuple[object, ...]:
    type_name = field.message_type.full_name if field.message_type else None
    enum_name = field.enum_type.full_name if field.enum_type else None
    oneof = field.containing_oneof.name if field.containing_oneof else None
    return (field.number, field.type, field.is_repeated, type_name, enum_name, oneof)


def _compare(ours: d.Descriptor, theirs: d.Descriptor) -> None:
    for field in ours.fields:
        assert field.name in theirs.fields_by_name, f"{ours.full_name}.{field.name} is not in the protocol"
        assert _field_signature(field) == _field_signature(theirs.fields_by_name[field.name]), (
            f"{ours.full_name}.{field.name} differs from the protocol"
        )
    for nested in ours.nested_types:
        _compare(nested, theirs.nested_types_by_name[nested.name])


@pytest.mark.parametrize("name", ROOT_MESSAGES)
def test_inference_messages_match_triton(name: str) -> None:
    _compare(
        inference_pb2.DESCRIPTOR.message_types_by_name[name],
        triton_service.DESCRIPTOR.message_types_by_name[name],
    )


@pytest.mark.parametrize("name", list(model_config_pb2.DESCRIPTOR.message_types_by_name))
def test_model_config_messages_match_triton(name: str) -> None:
    _compare(
        model_config_pb2.DESCRIPTOR.message_types_by_name[name],
        triton_mc.DESCRIPTOR.message_types_by_name[name],
    )


def test_enums_match_triton() -> None:
    for name, ours in model_config_pb2.DESCRIPTOR.enum_types_by_name.items():
        theirs = triton_mc.DESCRIPTOR.enum_types_by_name[name]
        assert {v.name: v.number for v in ours.values} == {v.name: v.number for v in theirs.values}


def test_service_methods_match_triton() -> None:
    ours = inference_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    theirs = triton_service.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert ours.full_name == "inference.GRPCInferenceService"
    for method in ours.methods:
        other = theirs.methods_by_name[method.name]
        assert method.input_type.full_name == other.input_type.full_name
        assert method.output_type.full_name == other.output_type.full_name
        assert (method.client_streaming, method.server_streaming) == (
            other.client_streaming,
            other.server_streaming,
        )


def test_generated_code_is_fresh() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/gen_protos.py", "--check"], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
