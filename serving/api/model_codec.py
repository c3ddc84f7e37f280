"""Domain → protobuf for the model RPCs: ModelMetadata, ModelConfig (effective), ModelStatistics,
RepositoryIndex. The gRPC servicer sends these messages; the HTTP front end renders the same messages
as JSON (serving/api/http/json_codec.py), so both transports describe a model identically."""

from __future__ import annotations

from collections.abc import Iterable

from serving.core.service import ModelInfo, ServerInfo
from serving.lifecycle.registry import IndexEntry
from serving.lifecycle.version import ModelVersion
from serving.proto import inference_pb2 as pb
from serving.proto import model_config_pb2 as mc
from serving.telemetry.statistics import Duration


def server_metadata(info: ServerInfo) -> pb.ServerMetadataResponse:
    return pb.ServerMetadataResponse(name=info.name, version=info.version, extensions=info.extensions)


def model_metadata(info: ModelInfo) -> pb.ModelMetadataResponse:
    version = info.version
    spec = version.spec
    reply = pb.ModelMetadataResponse(
        name=spec.name, versions=list(info.ready_versions), platform=version.platform
    )
    batch = [-1] if spec.max_batch_size > 0 else []
    for t in spec.inputs:
        reply.inputs.add(name=t.name, datatype=t.datatype, shape=batch + list(t.dims))
    for t in spec.outputs:
        reply.outputs.add(name=t.name, datatype=t.datatype, shape=batch + list(t.dims))
    return reply


def effective_config(version: ModelVersion) -> mc.ModelConfig:
    """The config as it runs: platform and instance placement resolved (KIND_AUTO → CPU or GPU)."""
    config = mc.ModelConfig()
    config.CopyFrom(version.spec.config)
    config.platform = version.platform
    config.backend = ""
    del config.instance_group[:]
    for device in sorted({p.device for p in version.placements}):
        count = sum(1 for p in version.placements if p.device == device)
        group = config.instance_group.add(name=f"{version.name}_{device.replace(':', '_')}", count=count)
        if device.startswith("cuda"):
            group.kind = mc.ModelInstanceGroup.KIND_GPU
            group.gpus.append(int(device.split(":")[1]))
        else:
            group.kind = mc.ModelInstanceGroup.KIND_CPU
    return config


def model_statistics(versions: Iterable[ModelVersion]) -> pb.ModelStatisticsResponse:
    reply = pb.ModelStatisticsResponse()
    for version in versions:
        reply.model_stats.append(statistics(version))
    return reply


def _duration(d: Duration) -> pb.StatisticDuration:
    return pb.StatisticDuration(count=d.count, ns=d.ns)


def statistics(version: ModelVersion) -> pb.ModelStatistics:
    s = version.stats.snapshot()
    reply = pb.ModelStatistics(
        name=version.name,
        version=str(version.version),
        last_inference=s.last_inference_ms,
        inference_count=s.inference_count,
        execution_count=s.execution_count,
        inference_stats=pb.InferStatistics(
            success=_duration(s.success),
            fail=_duration(s.fail),
            queue=_duration(s.queue),
            compute_input=_duration(s.compute_input),
            compute_infer=_duration(s.compute_infer),
            compute_output=_duration(s.compute_output),
        ),
    )
    for size, b in s.batch_stats.items():
        reply.batch_stats.add(
            batch_size=size,
            compute_input=_duration(b.compute_input),
            compute_infer=_duration(b.compute_infer),
            compute_output=_duration(b.compute_output),
        )
    return reply


def repository_index(entries: Iterable[IndexEntry]) -> pb.RepositoryIndexResponse:
    reply = pb.RepositoryIndexResponse()
    for entry in entries:
        reply.models.add(name=entry.name, version=entry.version, state=entry.state, reason=entry.reason)
    return reply
