from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModelRef(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class Shadow(_message.Message):
    __slots__ = ("version", "fraction")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FRACTION_FIELD_NUMBER: _ClassVar[int]
    version: int
    fraction: float
    def __init__(self, version: _Optional[int] = ..., fraction: _Optional[float] = ...) -> None: ...

class Policy(_message.Message):
    __slots__ = ("weights", "sticky", "shadow")
    class WeightsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: float
        def __init__(self, key: _Optional[int] = ..., value: _Optional[float] = ...) -> None: ...
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    STICKY_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    weights: _containers.ScalarMap[int, float]
    sticky: bool
    shadow: Shadow
    def __init__(self, weights: _Optional[_Mapping[int, float]] = ..., sticky: _Optional[bool] = ..., shadow: _Optional[_Union[Shadow, _Mapping]] = ...) -> None: ...

class PolicyReply(_message.Message):
    __slots__ = ("model", "policy", "file", "error")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    model: str
    policy: Policy
    file: str
    error: str
    def __init__(self, model: _Optional[str] = ..., policy: _Optional[_Union[Policy, _Mapping]] = ..., file: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class SetSplitRequest(_message.Message):
    __slots__ = ("model", "weights", "sticky")
    class WeightsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: float
        def __init__(self, key: _Optional[int] = ..., value: _Optional[float] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    STICKY_FIELD_NUMBER: _ClassVar[int]
    model: str
    weights: _containers.ScalarMap[int, float]
    sticky: bool
    def __init__(self, model: _Optional[str] = ..., weights: _Optional[_Mapping[int, float]] = ..., sticky: _Optional[bool] = ...) -> None: ...

class SetShadowRequest(_message.Message):
    __slots__ = ("model", "version", "fraction")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FRACTION_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    fraction: float
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., fraction: _Optional[float] = ...) -> None: ...

class PromoteRequest(_message.Message):
    __slots__ = ("model", "version")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class HistoryEntry(_message.Message):
    __slots__ = ("time", "action", "policy", "previous", "source")
    TIME_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    time: str
    action: str
    policy: Policy
    previous: Policy
    source: str
    def __init__(self, time: _Optional[str] = ..., action: _Optional[str] = ..., policy: _Optional[_Union[Policy, _Mapping]] = ..., previous: _Optional[_Union[Policy, _Mapping]] = ..., source: _Optional[str] = ...) -> None: ...

class PolicyChange(_message.Message):
    __slots__ = ("model", "change")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    model: str
    change: HistoryEntry
    def __init__(self, model: _Optional[str] = ..., change: _Optional[_Union[HistoryEntry, _Mapping]] = ...) -> None: ...

class HistoryRequest(_message.Message):
    __slots__ = ("model", "limit")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    model: str
    limit: int
    def __init__(self, model: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class HistoryReply(_message.Message):
    __slots__ = ("model", "entries")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    model: str
    entries: _containers.RepeatedCompositeFieldContainer[HistoryEntry]
    def __init__(self, model: _Optional[str] = ..., entries: _Optional[_Iterable[_Union[HistoryEntry, _Mapping]]] = ...) -> None: ...

class VersionStatus(_message.Message):
    __slots__ = ("version", "state", "reason", "devices", "queue_depth", "in_flight", "load_seconds", "traffic_share", "retired")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    LOAD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TRAFFIC_SHARE_FIELD_NUMBER: _ClassVar[int]
    RETIRED_FIELD_NUMBER: _ClassVar[int]
    version: int
    state: str
    reason: str
    devices: _containers.RepeatedScalarFieldContainer[str]
    queue_depth: int
    in_flight: int
    load_seconds: float
    traffic_share: float
    retired: bool
    def __init__(self, version: _Optional[int] = ..., state: _Optional[str] = ..., reason: _Optional[str] = ..., devices: _Optional[_Iterable[str]] = ..., queue_depth: _Optional[int] = ..., in_flight: _Optional[int] = ..., load_seconds: _Optional[float] = ..., traffic_share: _Optional[float] = ..., retired: _Optional[bool] = ...) -> None: ...

class VersionsReply(_message.Message):
    __slots__ = ("model", "versions", "policy", "policy_error")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    POLICY_ERROR_FIELD_NUMBER: _ClassVar[int]
    model: str
    versions: _containers.RepeatedCompositeFieldContainer[VersionStatus]
    policy: Policy
    policy_error: str
    def __init__(self, model: _Optional[str] = ..., versions: _Optional[_Iterable[_Union[VersionStatus, _Mapping]]] = ..., policy: _Optional[_Union[Policy, _Mapping]] = ..., policy_error: _Optional[str] = ...) -> None: ...

class ShadowPairStats(_message.Message):
    __slots__ = ("primary", "shadow", "compared", "agreement", "mean_abs_diff", "mismatched", "failed", "dropped", "latency_mean_seconds", "latency_p50_seconds", "latency_p99_seconds", "latency_max_seconds")
    PRIMARY_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    COMPARED_FIELD_NUMBER: _ClassVar[int]
    AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    MEAN_ABS_DIFF_FIELD_NUMBER: _ClassVar[int]
    MISMATCHED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MEAN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P50_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P99_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MAX_SECONDS_FIELD_NUMBER: _ClassVar[int]
    primary: int
    shadow: int
    compared: int
    agreement: float
    mean_abs_diff: float
    mismatched: int
    failed: int
    dropped: int
    latency_mean_seconds: float
    latency_p50_seconds: float
    latency_p99_seconds: float
    latency_max_seconds: float
    def __init__(self, primary: _Optional[int] = ..., shadow: _Optional[int] = ..., compared: _Optional[int] = ..., agreement: _Optional[float] = ..., mean_abs_diff: _Optional[float] = ..., mismatched: _Optional[int] = ..., failed: _Optional[int] = ..., dropped: _Optional[int] = ..., latency_mean_seconds: _Optional[float] = ..., latency_p50_seconds: _Optional[float] = ..., latency_p99_seconds: _Optional[float] = ..., latency_max_seconds: _Optional[float] = ...) -> None: ...

class ShadowStatsReply(_message.Message):
    __slots__ = ("model", "pairs")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PAIRS_FIELD_NUMBER: _ClassVar[int]
    model: str
    pairs: _containers.RepeatedCompositeFieldContainer[ShadowPairStats]
    def __init__(self, model: _Optional[str] = ..., pairs: _Optional[_Iterable[_Union[ShadowPairStats, _Mapping]]] = ...) -> None: ...
