"""The KServe v2 gRPC wire contract: the client side's only use of the generated stubs.

Requests are serialised once, up front; the hot path sends bytes through a channel method with no
serialiser and reads the served version straight out of the reply bytes (field 2 of
ModelInferResponse) without parsing the output tensors. Protobuf concatenation is a merge, so a
routing key is added to a pre-serialised request by appending the bytes of a request that holds
only that parameter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from serving.proto import inference_pb2 as pb
from serving.proto import inference_pb2_grpc as pb_grpc

INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"
ROUTING_KEY_PARAMETER = "routing_key"
ROUTING_KEY_HEADER = "x-routing-key"
ParamValue = bool | int | str
Metadata = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class TensorMeta:
    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ModelMeta:
    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorMeta, ...]
    outputs: tuple[TensorMeta, ...]


@dataclass(frozen=True)
class WireTensor:
    """One input as it travels: raw little-endian bytes (BYTES: 4-byte length + bytes per element)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    raw: bytes


def channel_options(separate_connection: bool = False) -> list[tuple[str, int]]:
    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    if separate_connection:
        options.append(("grpc.use_local_subchannel_pool", 1))
    return options


@dataclass(frozen=True)
class TlsFiles:
    """A TLS client's PEM contents, read once up front (they travel to the worker processes): the CA
    that signed the server's certificate (None: the system's roots) and, for mutual TLS, the client's
    certificate and key."""

    ca: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(self.ca, self.key, self.cert)


def read_tls(ca: str | None, cert: str | None, key: str | None, enabled: bool = False) -> TlsFiles | None:
    """TLS when any file is given (or `enabled`: the system's roots); None: plaintext. ValueError
    naming the flag when a file cannot be read or only one of cert and key is given."""
    if ca is None and cert is None and key is None and not enabled:
        return None
    if (cert is None) != (key is None):
        raise ValueError("--tls-cert and --tls-key: give both, or neither")
    contents: dict[str, bytes | None] = {}
    for flag, path in (("--tls-ca", ca), ("--tls-cert", cert), ("--tls-key", key)):
        try:
            contents[flag] = None if path is None else Path(path).read_bytes()
        except OSError as exc:
            raise ValueError(f"{flag}: cannot read {path}: {exc.strerror}") from None
    return TlsFiles(contents["--tls-ca"], contents["--tls-cert"], contents["--tls-key"])


def aio_channel(url: str, separate_connection: bool = False, tls: TlsFiles | None = None) -> grpc.aio.Channel:
    """A channel to `url`: plaintext, or TLS with `tls`."""
    options = channel_options(separate_connection)
    if tls is None:
        return grpc.aio.insecure_channel(url, options=options)
    return grpc.aio.secure_channel(url, tls.credentials(), options=options)


def infer_method(channel: grpc.aio.Channel) -> grpc.aio.UnaryUnaryMultiCallable:
    """ModelInfer taking pre-serialised request bytes and returning the raw reply bytes."""
    return channel.unary_unary(INFER_METHOD)


def _stub(channel: grpc.aio.Channel) -> Any:
    return pb_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]


def _tensor_meta(tensor: pb.ModelMetadataResponse.TensorMetadata) -> TensorMeta:
    return TensorMeta(tensor.name, tensor.datatype, tuple(int(d) for d in tensor.shape))


async def fetch_metadata(
    channel: grpc.aio.Channel, model: str, version: str = "", timeout: float = 10.0
) -> ModelMeta:
    stub = _stub(channel)
    reply = await stub.ModelMetadata(pb.ModelMetadataRequest(name=model, version=version), timeout=timeout)
    return ModelMeta(
        name=reply.name,
        versions=tuple(reply.versions),
        platform=reply.platform,
        inputs=tuple(_tensor_meta(t) for t in reply.inputs),
        outputs=tuple(_tensor_meta(t) for t in reply.outputs),
    )


def encode_request(model: str, version: str, tensors: Sequence[WireTensor]) -> bytes:
    request = pb.ModelInferRequest(model_name=model, model_version=version)
    for tensor in tensors:
        request.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=list(tensor.shape))
        request.raw_input_contents.append(tensor.raw)
    return request.SerializeToString()


def encode_routing_key(key: str) -> bytes:
    """Bytes that, appended to a serialised ModelInferRequest, add parameter routing_key=key."""
    request = pb.ModelInferRequest()
    request.parameters[ROUTING_KEY_PARAMETER].string_param = key
    return request.SerializeToString()


def decode_request(data: bytes) -> pb.ModelInferRequest:
    return pb.ModelInferRequest.FromString(data)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def model_version_of(data: bytes) -> str:
    """model_version (field 2 of ModelInferRequest and of ModelInferResponse) from serialised bytes,
    skipping the other fields unparsed."""
    pos, end = 0, len(data)
    while pos < end:
        tag, pos = _varint(data, pos)
        field, wire_type = tag >> 3, tag & 7
        if wire_type == 2:
            length, pos = _varint(data, pos)
            if field == 2:
                return data[pos : pos + length].decode("utf-8", "replace")
            pos += length
        elif wire_type == 0:
            _, pos = _varint(data, pos)
        elif wire_type == 1:
            pos += 8
        elif wire_type == 5:
            pos += 4
        else:
            raise ValueError(f"unexpected wire type {wire_type} in a ModelInferResponse")
    return ""


def _repository_parameters(
    target: pb.RepositoryModelLoadRequest | pb.RepositoryModelUnloadRequest,
    parameters: Mapping[str, ParamValue],
) -> None:
    for key, value in parameters.items():
        slot = target.parameters[key]
        if isinstance(value, bool):
            slot.bool_param = value
        elif isinstance(value, int):
            slot.int64_param = value
        else:
            slot.string_param = str(value)


async def repository_call(
    kind: str,
    channel: grpc.aio.Channel,
    model: str,
    parameters: Mapping[str, ParamValue],
    metadata: Metadata,
    timeout: float,
) -> None:
    """RepositoryModelLoad or RepositoryModelUnload of `model`, with `parameters`."""
    stub = _stub(channel)
    if kind == "load":
        load = pb.RepositoryModelLoadRequest(model_name=model)
        _repository_parameters(load, parameters)
        await stub.RepositoryModelLoad(load, metadata=metadata, timeout=timeout)
    else:
        unload = pb.RepositoryModelUnloadRequest(model_name=model)
        _repository_parameters(unload, parameters)
        await stub.RepositoryModelUnload(unload, metadata=metadata, timeout=timeout)
