"""Clients for the lifecycle tests: bounded load from threads, admin calls, and the y = x + version check.

Every request sends x = [i, i, i, i] to an add model whose version N computes y = x + N, so the output
itself says which version answered; `Sample` keeps it beside the reply's `model_version`.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import onnx
from onnx import TensorProto, helper

from serving.api.codec import build_infer_request
from serving.proto import admin_pb2 as apb
from serving.proto import admin_pb2_grpc, inference_pb2_grpc
from serving.proto import inference_pb2 as ipb

ADMIN = re.compile(r"ready grpc=\S+ metrics=\S+ admin=(\S+)")


def admin_address(log: str, grpc_address: str) -> str:
    """Where the admin service listens: its own port if the ready line names one, else the gRPC port."""
    match = ADMIN.search(log)
    return grpc_address if match is None or match.group(1) == "grpc" else match.group(1)


@dataclass(frozen=True)
class Sample:
    started: float  # time.monotonic() before the call
    ended: float
    key: str
    version: int  # 0 = failed
    error: str = ""


def infer(
    stub: inference_pb2_grpc.GRPCInferenceServiceStub,
    model: str,
    value: float = 0.0,
    *,
    key: str = "",
    key_in_metadata: bool = False,
    version: str = "",
    rows: int = 1,
    timeout: float = 30.0,
) -> int:
    """One request; returns the version that answered, checked against the output (y = x + version)."""
    x = np.full((rows, 4), value, np.float32)
    parameters = {"routing_key": key} if key and not key_in_metadata else None
    request = build_infer_request(model, {"x": x}, model_version=version, parameters=parameters)
    metadata = [("x-routing-key", key)] if key and key_in_metadata else None
    reply = stub.ModelInfer(request, timeout=timeout, metadata=metadata)
    y = np.frombuffer(reply.raw_output_contents[0], np.float32).reshape(rows, 4)
    answered = int(reply.model_version)
    assert np.allclose(y, x + answered), f"v{answered} answered y={y.tolist()} for x={x.tolist()}"
    return answered


@dataclass
class Load:
    """Threads sending requests back to back (a mix of sticky keys and none) until `stop()`."""

    address: str
    model: str
    threads: int = 4
    keys: Sequence[str] = ()
    rows: int = 1
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Load:
        for n in range(self.threads):
            worker = threading.Thread(target=self._run, args=(n,), daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def stop(self) -> list[Sample]:
        self._stop.set()
        for worker in self._workers:
            worker.join(60)
        return self.samples

    def _run(self, n: int) -> None:
        with grpc.insecure_channel(self.address) as channel:
            stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
            for i in itertools.count():
                if self._stop.is_set():
                    return
                key = self.keys[(i * self.threads + n) % len(self.keys)] if self.keys and i % 2 else ""
                started = time.monotonic()
                try:
                    version = infer(stub, self.model, float(i % 100), key=key, rows=self.rows)
                    sample = Sample(started, time.monotonic(), key, version)
                except (grpc.RpcError, AssertionError) as exc:
                    sample = Sample(started, time.monotonic(), key, 0, _error_text(exc))
                with self._lock:
                    self.samples.append(sample)


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, grpc.RpcError):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc)


class Admin:
    """The admin API (optionally with a bearer token) and KServe load/unload on the gRPC port."""

    def __init__(self, admin_address: str, grpc_address: str, token: str = "") -> None:
        self._channels = [grpc.insecure_channel(admin_address), grpc.insecure_channel(grpc_address)]
        self.admin = admin_pb2_grpc.ModelAdminStub(self._channels[0])
        self.inference = inference_pb2_grpc.GRPCInferenceServiceStub(self._channels[1])
        self.metadata = [("authorization", f"Bearer {token}")] if token else None

    def close(self) -> None:
        for channel in self._channels:
            channel.close()

    def split(self, model: str, weights: dict[int, float], sticky: bool | None = None) -> apb.Policy:
        request = apb.SetSplitRequest(model=model, weights=weights)
        if sticky is not None:
            request.sticky = sticky
        return self.admin.SetSplit(request, metadata=self.metadata, timeout=30).change.policy

    def promote(self, model: str, version: int) -> apb.Policy:
        request = apb.PromoteRequest(model=model, version=version)
        return self.admin.Promote(request, metadata=self.metadata, timeout=30).change.policy

    def rollback(self, model: str) -> apb.Policy:
        return self.admin.Rollback(
            apb.ModelRef(model=model), metadata=self.metadata, timeout=30
        ).change.policy

    def shadow(self, model: str, version: int, fraction: float) -> apb.Policy:
        request = apb.SetShadowRequest(model=model, version=version, fraction=fraction)
        return self.admin.SetShadow(request, metadata=self.metadata, timeout=30).change.policy

    def clear_shadow(self, model: str) -> apb.Policy:
        ref = apb.ModelRef(model=model)
        return self.admin.ClearShadow(ref, metadata=self.metadata, timeout=30).change.policy

    def clear(self, model: str) -> apb.Policy:
        ref = apb.ModelRef(model=model)
        return self.admin.ClearPolicy(ref, metadata=self.metadata, timeout=30).change.policy

    def policy(self, model: str) -> apb.PolicyReply:
        return self.admin.GetPolicy(apb.ModelRef(model=model), metadata=self.metadata, timeout=30)

    def versions(self, model: str) -> dict[int, apb.VersionStatus]:
        reply = self.admin.Versions(apb.ModelRef(model=model), metadata=self.metadata, timeout=30)
        return {v.version: v for v in reply.versions if not v.retired}

    def shadow_stats(self, model: str) -> dict[tuple[int, int], apb.ShadowPairStats]:
        reply = self.admin.ShadowStats(apb.ModelRef(model=model), metadata=self.metadata, timeout=30)
        return {(p.primary, p.shadow): p for p in reply.pairs}

    def load(self, model: str) -> None:
        request = ipb.RepositoryModelLoadRequest(model_name=model)
        self.inference.RepositoryModelLoad(request, metadata=self.metadata, timeout=120)

    def unload(self, model: str) -> None:
        request = ipb.RepositoryModelUnloadRequest(model_name=model)
        self.inference.RepositoryModelUnload(request, metadata=self.metadata, timeout=120)


def routable(policy: apb.Policy, loaded: set[int]) -> set[int]:
    """Versions that may answer an unpinned request under `policy` (empty = none: highest loaded)."""
    weighted = {v for v, w in policy.weights.items() if w > 0} & loaded
    return weighted if policy.weights else {max(loaded)}


def write_reshape_model(path: Path, addend: float) -> None:
    """ONNX: y = reshape(x, [1, 4]) + addend: a version that works for 1 row and fails for more."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [1, 4])
    constant = helper.make_tensor("addend", TensorProto.FLOAT, [1], [addend])
    nodes = [
        helper.make_node("Reshape", ["x", "shape"], ["r"]),
        helper.make_node("Add", ["r", "addend"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "reshape_add", [x], [y], initializer=[shape, constant])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
