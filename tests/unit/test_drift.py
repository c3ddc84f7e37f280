"""Drift statistics against scipy, prediction monitors (alerting, windows, bounded memory), the engine."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from prometheus_client import CollectorRegistry
from scipy.spatial.distance import jensenshannon
from scipy.stats import ks_2samp, wasserstein_distance

from serving.drift.config import DriftConfig, OutputSpec, infer_kind
from serving.drift.engine import DriftEngine
from serving.drift.monitor import PredictionMonitor
from serving.drift.reference import CONFIDENCE_EDGES, Reference, load_references
from serving.drift.statistics import PSI_EPSILON, js_distance, ks_statistic, psi, wasserstein
from serving.errors import ModelConfigError
from serving.telemetry.metrics import ServingMetrics

Floats = npt.NDArray[np.float64]
RNG_SEED = 20240601


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def count_vectors() -> list[tuple[list[float], list[float]]]:
    rng = np.random.default_rng(RNG_SEED)
    return [
        ([10, 20, 30, 40], [40, 30, 20, 10]),
        ([1, 0, 0, 0], [0, 0, 0, 1]),  # disjoint support
        ([5, 5, 0, 3], [5, 5, 1, 0]),  # empty bins on either side
        ([1, 1, 1], [1, 1, 1]),  # identical
        (list(rng.integers(0, 1000, 10).astype(float)), list(rng.integers(0, 1000, 10).astype(float))),
        (list(rng.random(1000)), list(rng.random(1000))),
    ]


def sample_pairs() -> list[tuple[Floats, Floats]]:
    rng = np.random.default_rng(RNG_SEED)
    return [
        (rng.normal(0, 1, 500), rng.normal(0.3, 1.2, 700)),
        (rng.exponential(2.0, 50), rng.exponential(1.0, 3000)),
        (rng.integers(0, 5, 300).astype(float), rng.integers(0, 7, 200).astype(float)),  # many ties
        (np.array([1.0]), np.array([2.0, 3.0])),
        (np.array([0.0, 1.0, 2.0]), np.array([0.0, 1.0, 2.0])),
    ]


@pytest.mark.parametrize(("p", "q"), count_vectors())
def test_js_distance_equals_scipy_base_2(p: list[float], q: list[float]) -> None:
    assert js_distance(p, q) == pytest.approx(float(jensenshannon(p, q, base=2)), abs=1e-9)


@pytest.mark.parametrize(("p", "q"), count_vectors())
def test_psi_equals_the_direct_formula(p: list[float], q: list[float]) -> None:
    expected = 0.0
    for e, a in zip(p, q, strict=True):
        pe, qa = max(e / sum(p), PSI_EPSILON), max(a / sum(q), PSI_EPSILON)
        expected += (qa - pe) * math.log(qa / pe)
    assert psi(p, q) == pytest.approx(expected, abs=1e-9)


def test_psi_is_zero_for_equal_distributions_and_symmetric() -> None:
    assert psi([1, 2, 3], [2, 4, 6]) == pytest.approx(0.0, abs=1e-12)
    assert psi([1, 2, 3], [3, 2, 1]) == pytest.approx(psi([3, 2, 1], [1, 2, 3]), abs=1e-12)
    with pytest.raises(ValueError):
        psi([0, 0], [1, 1])


@pytest.mark.parametrize(("a", "b"), sample_pairs())
def test_ks_statistic_equals_scipy(a: Floats, b: Floats) -> None:
    assert ks_statistic(a, b) == pytest.approx(float(ks_2samp(a, b).statistic), abs=1e-9)


@pytest.mark.parametrize(("a", "b"), sample_pairs())
def test_wasserstein_equals_scipy(a: Floats, b: Floats) -> None:
    assert wasserstein(a, b) == pytest.approx(float(wasserstein_distance(a, b)), abs=1e-9)


# ---------------------------------------------------------------- configuration


def test_config_from_parameters() -> None:
    config = DriftConfig.from_parameters(
        {
            "drift.probabilities": "classification",
            "drift.score": "numeric:0,0.5,1,2",
            "drift.embedding": "off",
            "drift.window.requests": "500",
            "drift.window.seconds": "60",
            "drift.threshold.wasserstein": "0.3",
            "batching.max_delay": "5",  # not ours
        }
    )
    assert config.outputs == {
        "probabilities": OutputSpec("classification"),
        "score": OutputSpec("numeric", (0.0, 0.5, 1.0, 2.0)),
        "embedding": None,
    }
    assert (config.window_requests, config.window_seconds) == (500, 60.0)
    assert config.thresholds["wasserstein"] == 0.3 and config.thresholds["psi"] == 0.2


@pytest.mark.parametrize(
    "parameters",
    [
        {"drift.score": "numeric:1,0"},
        {"drift.score": "histogram"},
        {"drift.window.requests": "-3"},
        {"drift.threshold.mse": "1"},
        {"drift.auto": "maybe"},
    ],
)
def test_config_errors_name_the_key(parameters: dict[str, str]) -> None:
    with pytest.raises(ModelConfigError, match=next(iter(parameters)).replace(".", r"\.")):
        DriftConfig.from_parameters(parameters)


def test_default_kind() -> None:
    probs = np.array([[0.2, 0.8], [0.5, 0.5]], dtype=np.float32)
    assert infer_kind(probs) == "classification"
    assert infer_kind(np.array([[2.0, -1.0], [0.5, 0.5]])) == "numeric"  # logits
    assert infer_kind(np.array([0.2, 0.8])) == "numeric"
    assert infer_kind(np.array([b"x"], dtype=object)) is None


# ---------------------------------------------------------------- monitors

CLASS_P = np.array([0.3, 0.2, 0.15, 0.1, 0.08, 0.07, 0.05, 0.03, 0.01, 0.01])


def probabilities(rng: np.random.Generator, rows: int, class_p: Floats = CLASS_P) -> Floats:
    """Rows of softmax-like probabilities whose top-1 class is drawn from `class_p`."""
    top = rng.choice(len(class_p), size=rows, p=class_p)
    out = rng.dirichlet(np.ones(len(class_p)), size=rows) * 0.3
    out[np.arange(rows), top] += 0.7
    normalised: Floats = out / out.sum(axis=1, keepdims=True)
    return normalised


def classification_reference(rng: np.random.Generator, rows: int = 20_000) -> Reference:
    batch = probabilities(rng, rows)
    top = batch.argmax(axis=1)
    confidence, _ = np.histogram(batch.max(axis=1), bins=CONFIDENCE_EDGES)
    return Reference.from_json(
        {
            "output": "probabilities",
            "kind": "classification",
            "class_counts": np.bincount(top, minlength=10).tolist(),
            "confidence_hist": {"edges": list(CONFIDENCE_EDGES), "counts": confidence.tolist()},
            "n": rows,
        }
    )


def classifier_monitor(clock: FakeClock, **config: int | float) -> PredictionMonitor:
    rng = np.random.default_rng(RNG_SEED)
    return PredictionMonitor(
        ("m", "1", "probabilities"),
        OutputSpec("classification"),
        DriftConfig(**config),  # type: ignore[arg-type]
        n_classes=10,
        clock=clock,
        reference=classification_reference(rng),
    )


def test_in_distribution_predictions_do_not_alert() -> None:
    clock, rng = FakeClock(), np.random.default_rng(RNG_SEED + 1)
    monitor = classifier_monitor(clock, window_requests=1000, min_rows=500)
    for _ in range(1000):
        monitor.observe(probabilities(rng, 4))
        clock.now += 0.01
    result = monitor.evaluate()
    assert result.window_rows == 4000 and result.reference_rows == 20_000
    assert set(result.scores) == {"psi", "js_distance", "confidence_psi"}
    assert result.scores["psi"] < 0.02 and result.scores["js_distance"] < 0.05
    assert not result.alert


def test_shifted_predictions_alert() -> None:
    clock, rng = FakeClock(), np.random.default_rng(RNG_SEED + 1)
    monitor = classifier_monitor(clock, window_requests=1000, min_rows=500)
    for _ in range(1000):
        monitor.observe(probabilities(rng, 4, CLASS_P[::-1].copy()))
        clock.now += 0.01
    result = monitor.evaluate()
    assert result.scores["psi"] > 1.0 and result.scores["js_distance"] > 0.3
    assert result.alert


def test_too_few_rows_never_alert() -> None:
    clock, rng = FakeClock(), np.random.default_rng(RNG_SEED + 1)
    monitor = classifier_monitor(clock, min_rows=500)
    monitor.observe(probabilities(rng, 100, CLASS_P[::-1].copy()))
    result = monitor.evaluate()
    assert result.scores["psi"] > 1.0 and not result.alert


def test_window_by_request_count_keeps_only_the_last_requests() -> None:
    clock, rng = FakeClock(), np.random.default_rng(RNG_SEED + 1)
    monitor = classifier_monitor(clock, window_requests=100, window_buckets=10, min_rows=10)
    for _ in range(100):
        monitor.observe(probabilities(rng, 2, CLASS_P[::-1].copy()))  # shifted, then
    for _ in range(100):
        monitor.observe(probabilities(rng, 2))  # back to normal: the shifted requests have left
    window = monitor.window()
    assert window.requests == 100 and window.rows == 200
    assert not monitor.evaluate().alert
    monitor.observe(probabilities(rng, 2))  # a new bucket starts, the oldest (10 requests) goes
    assert monitor.window().requests == 91


def test_window_by_time_drops_old_buckets() -> None:
    clock, rng = FakeClock(), np.random.default_rng(RNG_SEED + 1)
    monitor = classifier_monitor(clock, window_requests=10_000, window_seconds=60, window_buckets=6)
    for _ in range(30):
        monitor.observe(probabilities(rng, 1))
        clock.now += 1.0  # 30 requests over 30 s: buckets at 1000, 1010, 1020
    assert monitor.window().requests == 30
    clock.now = 1000.0 + 65  # the bucket that started at 1000 is now older than 60 s
    assert monitor.window().requests == 20
    clock.now = 1000.0 + 200
    assert monitor.window().requests == 0 and monitor.evaluate().scores == {}


def test_per_request_work_and_memory_are_bounded() -> None:
    clock, rng = FakeClock(), np.random.default_rng(RNG_SEED + 1)
    config = DriftConfig(window_requests=100, window_buckets=10, values_per_request=4)
    monitor = PredictionMonitor(("m", "1", "y"), OutputSpec("numeric"), config, clock=clock)
    for _ in range(5000):
        monitor.observe(rng.normal(size=(3, 50)))  # 150 values per request, 4 kept
        clock.now += 0.001
    sizes = monitor.bucket_sizes()
    assert len(sizes) == 10
    assert all(requests <= 10 and capacity == 10 * 4 for requests, capacity in sizes)
    assert monitor.window().n_values == 100 * 4
    reference = monitor.reference
    assert reference is not None and reference.source == "captured"
    assert len(reference.values) <= config.reference_rows * 4


def test_numeric_monitor_scores_against_captured_reference() -> None:
    clock, rng = FakeClock(), np.random.default_rng(RNG_SEED + 1)
    config = DriftConfig(window_requests=400, reference_rows=400, min_rows=100, values_per_request=8)
    monitor = PredictionMonitor(("m", "1", "y"), OutputSpec("numeric", (0.0, 1.0)), config, clock=clock)
    assert monitor.evaluate().scores == {}  # capturing
    for _ in range(400):
        monitor.observe(rng.normal(0.0, 1.0, size=(1, 8)))
    reference = monitor.reference
    assert reference is not None and reference.n == 400 and len(reference.values) == 3200
    steady = monitor.evaluate()
    assert steady.scores["ks"] < 0.1 and not steady.alert
    for _ in range(400):
        monitor.observe(rng.normal(1.0, 1.0, size=(1, 8)))
    shifted = monitor.evaluate()
    assert shifted.scores["ks"] > 0.3 and shifted.scores["wasserstein"] > 0.8 and shifted.alert
    window = monitor.window().values[: monitor.window().n_values]
    assert shifted.scores["ks"] == pytest.approx(ks_2samp(reference.values, window).statistic, abs=1e-9)


def test_set_and_reset_reference() -> None:
    clock, rng = FakeClock(), np.random.default_rng(RNG_SEED + 1)
    monitor = classifier_monitor(clock, reference_rows=50)
    assert monitor.reference is not None and monitor.reference.source == "set"
    monitor.reset_reference()
    assert monitor.reference is None and monitor.compute() == {}
    monitor.observe(probabilities(rng, 60))
    assert monitor.reference is not None and monitor.reference.source == "captured"
    assert monitor.reference.n == 60 and sum(monitor.reference.class_counts) == 60
    with pytest.raises(ValueError, match="classes"):
        monitor.set_reference(Reference("classification", 3, (1, 1, 1), (0,) * 10))


def test_counts_are_cumulative_and_match_numpy() -> None:
    clock, rng = FakeClock(), np.random.default_rng(RNG_SEED + 1)
    monitor = classifier_monitor(clock)
    batch = probabilities(rng, 300)
    monitor.observe(batch[:100])
    monitor.observe(batch[100:])
    counts = monitor.counts()
    assert counts.class_counts == tuple(np.bincount(batch.argmax(axis=1), minlength=10).tolist())
    assert counts.confidence is not None
    expected, _ = np.histogram(batch.max(axis=1), bins=CONFIDENCE_EDGES)
    assert counts.confidence.counts == (*expected.tolist(), 0)


# ---------------------------------------------------------------- reference files and the engine


def write_reference(folder: Path, reference: Reference) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "reference.json").write_text(json.dumps(reference.to_json("probabilities")))


def test_load_references_round_trip_and_errors(tmp_path: Path) -> None:
    reference = classification_reference(np.random.default_rng(RNG_SEED))
    write_reference(tmp_path, reference)
    loaded = load_references(tmp_path / "reference.json")["probabilities"]
    assert loaded.class_counts == reference.class_counts and loaded.source == "file"
    (tmp_path / "reference.json").write_text('{"output": "p", "kind": "ranking"}')
    with pytest.raises(ModelConfigError, match="reference.json"):
        load_references(tmp_path / "reference.json")


def test_engine_observes_computes_and_exports(tmp_path: Path) -> None:
    registry, clock = CollectorRegistry(), FakeClock()
    metrics = ServingMetrics(registry, gpu_probe=None, process_metrics=False)
    engine = DriftEngine(metrics, interval_s=60, clock=clock)
    write_reference(tmp_path / "1", classification_reference(np.random.default_rng(RNG_SEED)))
    engine.add_version("m", "1", {"drift.window.min_rows": "100", "drift.embedding": "off"}, tmp_path / "1")
    rng = np.random.default_rng(RNG_SEED + 2)
    for _ in range(100):
        outputs = {
            "probabilities": probabilities(rng, 4, CLASS_P[::-1].copy()),
            "embedding": rng.normal(size=(4, 8)),
        }
        engine.observe("m", "1", outputs)
    engine.observe("m", "9", {"probabilities": probabilities(rng, 1)})  # not added: ignored
    engine.compute_now()
    labels = {"model": "m", "version": "1", "output": "probabilities"}
    assert registry.get_sample_value("serving_drift_alert", labels) == 1
    assert registry.get_sample_value("serving_drift_score", {**labels, "statistic": "psi"}) > 1.0  # type: ignore[operator]
    assert registry.get_sample_value("serving_predicted_class_total", {**labels, "class": "9"}) > 0  # type: ignore[operator]
    assert engine.monitor("m", "1", "embedding") is None
    engine.reset_reference("m", "1", "probabilities")
    engine.compute_now()
    assert registry.get_sample_value("serving_drift_score", {**labels, "statistic": "psi"}) is None
    assert registry.get_sample_value("serving_drift_alert", labels) == 0
    engine.remove_version("m", "1")
    assert registry.get_sample_value("serving_drift_alert", labels) is None
    assert registry.get_sample_value("serving_predicted_class_total", {**labels, "class": "9"}) is None


def test_submitted_requests_are_summarised_off_the_caller_and_count_the_same(tmp_path: Path) -> None:
    """submit() only queues; flush() (the engine's thread) sums the requests, grouped, to the same
    counts as observing each request on its own."""
    rng = np.random.default_rng(RNG_SEED + 5)
    batches = [probabilities(rng, int(n)) for n in rng.integers(1, 5, size=200)]
    engines = []
    for submitted in (False, True):
        metrics = ServingMetrics(CollectorRegistry(), gpu_probe=None, process_metrics=False)
        engine = DriftEngine(metrics, interval_s=60, clock=FakeClock())
        engine.add_version("m", "1", {}, None)
        for batch in batches:
            if submitted:
                engine.submit("m", "1", {"probabilities": batch})
            else:
                engine.observe("m", "1", {"probabilities": batch})
        engines.append(engine)
    alone, queued = engines
    assert queued.monitor("m", "1", "probabilities") is not None  # monitor() summarises what is queued
    a, q = (e.monitor("m", "1", "probabilities") for e in engines)
    assert a is not None and q is not None
    qc, ac = q.counts(), a.counts()
    assert qc.class_counts == ac.class_counts and sum(qc.class_counts) == sum(b.shape[0] for b in batches)
    assert qc.confidence is not None and ac.confidence is not None
    assert qc.confidence.counts == ac.confidence.counts
    assert qc.confidence.total == pytest.approx(ac.confidence.total, rel=1e-12)  # summed in another order
    assert (
        (q.window().requests, q.window().rows)
        == (a.window().requests, a.window().rows)
        == (
            200,
            sum(b.shape[0] for b in batches),
        )
    )


def test_a_full_drift_queue_drops_and_counts_instead_of_blocking() -> None:
    registry = CollectorRegistry()
    metrics = ServingMetrics(registry, gpu_probe=None, process_metrics=False)
    engine = DriftEngine(metrics, interval_s=60, clock=FakeClock(), max_pending=3)
    engine.add_version("m", "1", {}, None)
    rng = np.random.default_rng(RNG_SEED + 6)
    for _ in range(5):
        engine.submit("m", "1", {"probabilities": probabilities(rng, 2)})
    assert registry.get_sample_value("serving_drift_dropped_total", {"model": "m", "version": "1"}) == 2
    monitor = engine.monitor("m", "1", "probabilities")
    assert monitor is not None and monitor.window().requests == 3
    engine.submit("m", "1", {"probabilities": probabilities(rng, 2)})  # room again after the flush
    assert registry.get_sample_value("serving_drift_dropped_total", {"model": "m", "version": "1"}) == 2


def test_engine_rejects_references_that_contradict_the_config(tmp_path: Path) -> None:
    metrics = ServingMetrics(CollectorRegistry(), gpu_probe=None, process_metrics=False)
    engine = DriftEngine(metrics, clock=FakeClock())
    write_reference(tmp_path, classification_reference(np.random.default_rng(RNG_SEED)))
    with pytest.raises(ModelConfigError, match="configured numeric"):
        engine.add_version("m", "1", {"drift.probabilities": "numeric"}, tmp_path)
    engine.add_version("m", "1", {"drift.auto": "false"}, tmp_path)  # the reference still enables it
    engine.observe(
        "m", "1", {"probabilities": probabilities(np.random.default_rng(1), 5), "other": np.ones((5, 2))}
    )
    monitor = engine.monitor("m", "1", "probabilities")
    assert monitor is not None and monitor.reference is not None and monitor.reference.source == "file"
    assert engine.monitor("m", "1", "other") is None
    with pytest.raises(ValueError, match="classes"):
        engine.set_reference("m", "1", "probabilities", Reference("classification", 3, (1, 2), (0,) * 10))
    with pytest.raises(KeyError):
        engine.reset_reference("m", "404", "probabilities")


def test_engine_skips_a_misbehaving_output_without_raising() -> None:
    metrics = ServingMetrics(CollectorRegistry(), gpu_probe=None, process_metrics=False)
    engine = DriftEngine(metrics, clock=FakeClock())
    engine.add_version("m", "1", {"drift.p": "classification"}, None)
    engine.observe("m", "1", {"p": np.full((2, 4), 0.25)})
    engine.observe("m", "1", {"p": np.full((2, 5), 0.2)})  # width changed: logged, skipped from now on
    engine.observe("m", "1", {"p": np.full((2, 4), 0.25)})
    monitor = engine.monitor("m", "1", "p")
    assert monitor is not None and monitor.window().requests == 1


def test_engine_thread_starts_and_stops() -> None:
    metrics = ServingMetrics(CollectorRegistry(), gpu_probe=None, process_metrics=False)
    engine = DriftEngine(metrics, interval_s=0.01)
    engine.start()
    with pytest.raises(RuntimeError):
        engine.start()
    engine.stop()
    engine.stop()  # idempotent
