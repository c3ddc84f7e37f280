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
    __slots__ = ("weights", "sticky", "shadow", "rollout_phase")
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
    ROLLOUT_PHASE_FIELD_NUMBER: _ClassVar[int]
    weights: _containers.ScalarMap[int, float]
    sticky: bool
    shadow: Shadow
    rollout_phase: str
    def __init__(self, weights: _Optional[_Mapping[int, float]] = ..., sticky: _Optional[bool] = ..., shadow: _Optional[_Union[Shadow, _Mapping]] = ..., rollout_phase: _Optional[str] = ...) -> None: ...

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
    __slots__ = ("time", "action", "policy", "previous", "source", "reason", "evidence_json")
    TIME_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_JSON_FIELD_NUMBER: _ClassVar[int]
    time: str
    action: str
    policy: Policy
    previous: Policy
    source: str
    reason: str
    evidence_json: str
    def __init__(self, time: _Optional[str] = ..., action: _Optional[str] = ..., policy: _Optional[_Union[Policy, _Mapping]] = ..., previous: _Optional[_Union[Policy, _Mapping]] = ..., source: _Optional[str] = ..., reason: _Optional[str] = ..., evidence_json: _Optional[str] = ...) -> None: ...

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

class StartRolloutRequest(_message.Message):
    __slots__ = ("model", "candidate", "steps", "step_time_seconds", "gates", "min_requests", "shadow_seconds", "shadow_fraction", "sticky", "rollback_window_seconds")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    STEP_TIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    GATES_FIELD_NUMBER: _ClassVar[int]
    MIN_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    SHADOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FRACTION_FIELD_NUMBER: _ClassVar[int]
    STICKY_FIELD_NUMBER: _ClassVar[int]
    ROLLBACK_WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    model: str
    candidate: int
    steps: _containers.RepeatedScalarFieldContainer[float]
    step_time_seconds: float
    gates: str
    min_requests: int
    shadow_seconds: float
    shadow_fraction: float
    sticky: bool
    rollback_window_seconds: float
    def __init__(self, model: _Optional[str] = ..., candidate: _Optional[int] = ..., steps: _Optional[_Iterable[float]] = ..., step_time_seconds: _Optional[float] = ..., gates: _Optional[str] = ..., min_requests: _Optional[int] = ..., shadow_seconds: _Optional[float] = ..., shadow_fraction: _Optional[float] = ..., sticky: _Optional[bool] = ..., rollback_window_seconds: _Optional[float] = ...) -> None: ...

class ControlRolloutRequest(_message.Message):
    __slots__ = ("model", "action")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    model: str
    action: str
    def __init__(self, model: _Optional[str] = ..., action: _Optional[str] = ...) -> None: ...

class GateStatus(_message.Message):
    __slots__ = ("gate", "op", "threshold", "statistic", "lower", "upper", "verdict", "candidate_count", "baseline_count", "detail")
    GATE_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    STATISTIC_FIELD_NUMBER: _ClassVar[int]
    LOWER_FIELD_NUMBER: _ClassVar[int]
    UPPER_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_COUNT_FIELD_NUMBER: _ClassVar[int]
    BASELINE_COUNT_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    gate: str
    op: str
    threshold: float
    statistic: float
    lower: float
    upper: float
    verdict: str
    candidate_count: int
    baseline_count: int
    detail: str
    def __init__(self, gate: _Optional[str] = ..., op: _Optional[str] = ..., threshold: _Optional[float] = ..., statistic: _Optional[float] = ..., lower: _Optional[float] = ..., upper: _Optional[float] = ..., verdict: _Optional[str] = ..., candidate_count: _Optional[int] = ..., baseline_count: _Optional[int] = ..., detail: _Optional[str] = ...) -> None: ...

class RolloutStatus(_message.Message):
    __slots__ = ("model", "phase", "baseline", "candidate", "step", "steps", "candidate_percent", "paused_phase", "reason", "failed_gate", "step_elapsed_seconds", "next_decision_seconds", "gates", "plan_json", "updated", "sticky", "rollback_window_left_seconds")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    BASELINE_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_PERCENT_FIELD_NUMBER: _ClassVar[int]
    PAUSED_PHASE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    FAILED_GATE_FIELD_NUMBER: _ClassVar[int]
    STEP_ELAPSED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_DECISION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    GATES_FIELD_NUMBER: _ClassVar[int]
    PLAN_JSON_FIELD_NUMBER: _ClassVar[int]
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    STICKY_FIELD_NUMBER: _ClassVar[int]
    ROLLBACK_WINDOW_LEFT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    model: str
    phase: str
    baseline: int
    candidate: int
    step: int
    steps: _containers.RepeatedScalarFieldContainer[float]
    candidate_percent: float
    paused_phase: str
    reason: str
    failed_gate: str
    step_elapsed_seconds: float
    next_decision_seconds: float
    gates: _containers.RepeatedCompositeFieldContainer[GateStatus]
    plan_json: str
    updated: str
    sticky: bool
    rollback_window_left_seconds: float
    def __init__(self, model: _Optional[str] = ..., phase: _Optional[str] = ..., baseline: _Optional[int] = ..., candidate: _Optional[int] = ..., step: _Optional[int] = ..., steps: _Optional[_Iterable[float]] = ..., candidate_percent: _Optional[float] = ..., paused_phase: _Optional[str] = ..., reason: _Optional[str] = ..., failed_gate: _Optional[str] = ..., step_elapsed_seconds: _Optional[float] = ..., next_decision_seconds: _Optional[float] = ..., gates: _Optional[_Iterable[_Union[GateStatus, _Mapping]]] = ..., plan_json: _Optional[str] = ..., updated: _Optional[str] = ..., sticky: _Optional[bool] = ..., rollback_window_left_seconds: _Optional[float] = ...) -> None: ...
