"""The routing core: weighted splits, sticky rendezvous hashing, shadow sampling, policy validation."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections import Counter
from collections.abc import Collection, Mapping
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from serving.errors import InvalidInput, Unavailable
from serving.traffic.policy import (
    PolicyError,
    ShadowComparison,
    ShadowPolicy,
    TrafficPolicy,
    choose_version,
    clear_shadow,
    hash_unit,
    promote,
    set_shadow,
    should_shadow,
    split,
)
from serving.types import Array

MODEL = "resnet"
DRAWS = 20_000
KEYS = [f"user-{i}" for i in range(10_000)]
P_MIN = 0.001
REPO_ROOT = Path(__file__).resolve().parents[2]


def draw(policy: TrafficPolicy | None, ready: Collection[int], n: int = DRAWS, seed: int = 7) -> Counter[int]:
    rng = random.Random(seed)
    return Counter(choose_version(MODEL, policy, ready, None, rng) for _ in range(n))


def sticky_assignments(policy: TrafficPolicy, ready: Collection[int], keys: list[str]) -> list[int]:
    rng = random.Random(0)
    return [choose_version(MODEL, policy, ready, key, rng) for key in keys]


def assert_matches_weights(counts: Counter[int], weights: Mapping[int, float]) -> None:
    versions = sorted(weights)
    total = sum(counts.values())
    assert set(counts) <= set(versions), f"chose versions outside {versions}: {counts}"
    weight_sum = sum(weights.values())
    observed = [counts[v] for v in versions]
    expected = [total * weights[v] / weight_sum for v in versions]
    p = stats.chisquare(observed, expected).pvalue
    assert p > P_MIN, f"observed {observed} vs expected {expected}: p={p}"


# ---- random (non-sticky) splits ------------------------------------------------------------------


def test_random_split_matches_two_weights() -> None:
    policy = TrafficPolicy({1: 90, 2: 10})
    assert_matches_weights(draw(policy, {1, 2}), {1: 90, 2: 10})


def test_random_split_matches_three_weights() -> None:
    policy = TrafficPolicy({1: 50, 2: 30, 3: 20})
    assert_matches_weights(draw(policy, {1, 2, 3}), {1: 50, 2: 30, 3: 20})


def test_a_weighted_version_that_is_not_ready_is_renormalised_away() -> None:
    policy = TrafficPolicy({1: 60, 2: 30, 3: 10})
    counts = draw(policy, {1, 3, 4})  # 2 not ready; 4 ready but has no weight
    assert counts[2] == 0 and counts[4] == 0
    assert_matches_weights(counts, {1: 60, 3: 10})


def test_zero_weight_versions_never_serve() -> None:
    counts = draw(TrafficPolicy({1: 0, 2: 5}), {1, 2}, n=2_000)
    assert counts == Counter({2: 2_000})


def test_no_weighted_version_ready_is_unavailable_and_lists_states() -> None:
    policy = TrafficPolicy({1: 90, 2: 10})
    with pytest.raises(Unavailable) as caught:
        choose_version(MODEL, policy, {3}, None, random.Random(1), {1: "LOADING", 2: "FAILED", 3: "READY"})
    message = str(caught.value)
    assert "resnet" in message and "1=90 2=10" in message
    assert "1=LOADING" in message and "2=FAILED" in message and "ready versions: [3]" in message


def test_without_a_policy_the_highest_ready_version_serves() -> None:
    assert draw(None, {1, 3, 2}, n=100) == Counter({3: 100})
    with pytest.raises(Unavailable, match="no ready version"):
        choose_version(MODEL, None, [], None, random.Random(1))


def test_random_draws_are_reproducible_with_a_seeded_rng() -> None:
    policy = TrafficPolicy({1: 1, 2: 1, 3: 1})
    rng_a, rng_b = random.Random(11), random.Random(11)
    first = [choose_version(MODEL, policy, {1, 2, 3}, None, rng_a) for _ in range(500)]
    assert first == [choose_version(MODEL, policy, {1, 2, 3}, None, rng_b) for _ in range(500)]
    assert set(first) == {1, 2, 3}


def test_a_routing_key_is_ignored_unless_sticky() -> None:
    policy = TrafficPolicy({1: 50, 2: 50})
    rng = random.Random(3)
    assert {choose_version(MODEL, policy, {1, 2}, "same-user", rng) for _ in range(200)} == {1, 2}


# ---- sticky routing ------------------------------------------------------------------------------


def test_sticky_same_key_same_version_and_split_matches_weights() -> None:
    policy = TrafficPolicy({1: 90, 2: 10}, sticky=True)
    first = sticky_assignments(policy, {1, 2}, KEYS)
    assert sticky_assignments(policy, {1, 2}, KEYS) == first
    assert_matches_weights(Counter(first), {1: 90, 2: 10})


def test_sticky_split_matches_three_weights() -> None:
    policy = TrafficPolicy({1: 50, 2: 30, 3: 20}, sticky=True)
    assert_matches_weights(Counter(sticky_assignments(policy, {1, 2, 3}, KEYS)), {1: 50, 2: 30, 3: 20})


def test_sticky_without_a_key_draws_at_random() -> None:
    policy = TrafficPolicy({1: 50, 2: 50}, sticky=True)
    rng = random.Random(3)
    assert {choose_version(MODEL, policy, {1, 2}, None, rng) for _ in range(200)} == {1, 2}
    assert {choose_version(MODEL, policy, {1, 2}, "", rng) for _ in range(200)} == {1, 2}


@pytest.mark.parametrize("v1_weight", [90, 50])
def test_raising_a_weight_only_moves_keys_to_that_version(v1_weight: int) -> None:
    before = sticky_assignments(TrafficPolicy({1: 90, 2: 10}, sticky=True), {1, 2}, KEYS)
    after = sticky_assignments(TrafficPolicy({1: v1_weight, 2: 50}, sticky=True), {1, 2}, KEYS)
    moves = Counter((old, new) for old, new in zip(before, after, strict=True) if old != new)
    assert moves[(2, 1)] == 0
    assert moves[(1, 2)] > 1_000


def test_a_new_version_takes_keys_only_to_itself() -> None:
    before = sticky_assignments(TrafficPolicy({1: 60, 2: 40}, sticky=True), {1, 2, 3}, KEYS)
    after = sticky_assignments(TrafficPolicy({1: 60, 2: 40, 3: 20}, sticky=True), {1, 2, 3}, KEYS)
    moved = [(old, new) for old, new in zip(before, after, strict=True) if old != new]
    assert moved and all(new == 3 for _, new in moved)


def test_a_version_leaving_the_ready_set_moves_only_its_own_keys() -> None:
    policy = TrafficPolicy({1: 50, 2: 30, 3: 20}, sticky=True)
    before = sticky_assignments(policy, {1, 2, 3}, KEYS)
    after = sticky_assignments(policy, {1, 3}, KEYS)
    assert all(old == new for old, new in zip(before, after, strict=True) if old != 2)
    assert 2 not in after


def test_hash_is_pinned_so_every_release_and_replica_agrees() -> None:
    assert hash_unit("resnet", 1, "user-42") == 0.7871219128839413
    assert hash_unit("resnet", 2, "user-42") == 0.4459416384847968
    assert all(0.0 < hash_unit(MODEL, v, k) < 1.0 for v in (1, 2) for k in KEYS[:1000])


def test_sticky_assignments_are_stable_across_processes() -> None:
    keys = KEYS[:3_000]
    policy = TrafficPolicy({1: 70, 2: 20, 3: 10}, sticky=True)
    script = (
        "import json, random, sys\n"
        "from serving.traffic.policy import TrafficPolicy, choose_version\n"
        "policy = TrafficPolicy.from_dict(json.loads(sys.argv[1]))\n"
        "keys = [f'user-{i}' for i in range(int(sys.argv[2]))]\n"
        "rng = random.Random()\n"
        f"print(json.dumps([choose_version({MODEL!r}, policy, {{1, 2, 3}}, k, rng) for k in keys]))\n"
    )
    results = []
    for seed in ("1", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", script, json.dumps(policy.to_dict()), str(len(keys))],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        results.append(json.loads(done.stdout))
    assert results[0] == results[1] == sticky_assignments(policy, {1, 2, 3}, keys)


# ---- shadow sampling -----------------------------------------------------------------------------


def test_shadow_fraction_within_binomial_bounds() -> None:
    policy = TrafficPolicy({1: 100}, shadow=ShadowPolicy(version=2, fraction=0.1))
    rng = random.Random(9)
    shadowed = sum(should_shadow(policy, 1, rng) == 2 for _ in range(DRAWS))
    low, high = stats.binom.interval(1 - P_MIN, DRAWS, 0.1)
    assert low <= shadowed <= high


def test_never_shadows_to_the_primary_version() -> None:
    policy = TrafficPolicy({1: 50, 2: 50}, shadow=ShadowPolicy(version=2, fraction=1.0))
    rng = random.Random(2)
    outcomes = set()
    for _ in range(2_000):
        primary = choose_version(MODEL, policy, {1, 2}, None, rng)
        shadow = should_shadow(policy, primary, rng, {1, 2})
        assert shadow != primary
        outcomes.add((primary, shadow))
    assert outcomes == {(1, 2), (2, None)}


def test_no_shadow_without_one_or_when_it_is_not_ready() -> None:
    rng = random.Random(1)
    policy = TrafficPolicy({1: 100}, shadow=ShadowPolicy(version=2, fraction=1.0))
    assert should_shadow(None, 1, rng) is None
    assert should_shadow(TrafficPolicy({1: 1}), 1, rng) is None
    assert should_shadow(policy, 1, rng, ready_versions={1}) is None
    assert should_shadow(policy, 1, rng, ready_versions={1, 2}) == 2


# ---- validation and serialisation ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"weights": {}}, "weights: at least one version needs a weight > 0"),
        ({"weights": {"1": 0, "2": 0}}, "weights: at least one version needs a weight > 0"),
        ({"weights": {"1": -5, "2": 10}}, "weights[1]: must be >= 0, got -5"),
        ({"weights": {"0": 10}}, "weights: version '0' is not a positive integer"),
        ({"weights": {"v2": 10}}, "weights: version 'v2' is not a positive integer"),
        ({"weights": {"1": 10, "01": 5}}, "weights: version 1 appears more than once"),
        ({"weights": {"1": "90"}}, "weights[1]: must be a finite number, got '90'"),
        ({"weights": {"1": True}}, "weights[1]: must be a finite number"),
        ({"weights": {"1": float("nan")}}, "weights[1]: must be a finite number"),
        ({"weights": [90, 10]}, "weights: must be an object"),
        ({}, "weights: missing"),
        ({"weights": {"1": 1}, "sticky": "yes"}, "sticky: must be true or false, got 'yes'"),
        ({"weights": {"1": 1}, "stickey": True}, "policy: unknown field(s) stickey"),
        ({"weights": {"1": 1}, "format": 2}, "format: unsupported format 2"),
        ({"weights": {"1": 1}, "shadow": {"version": 2}}, "shadow: missing fraction"),
        (
            {"weights": {"1": 1}, "shadow": {"version": 2, "fraction": 0}},
            "shadow.fraction: must be in (0, 1], got 0",
        ),
        (
            {"weights": {"1": 1}, "shadow": {"version": 2, "fraction": 1.5}},
            "shadow.fraction: must be in (0, 1]",
        ),
        ({"weights": {"1": 1}, "shadow": {"version": -2, "fraction": 0.1}}, "shadow.version: version -2"),
        (
            {"weights": {"1": 1}, "shadow": {"version": 1, "fraction": 0.1}},
            "version 1 already takes all the traffic",
        ),
        ({"weights": {"1": 1}, "shadow": [2, 0.1]}, "shadow: must be an object"),
        ([("1", 1)], "policy: must be an object"),
    ],
)
def test_invalid_policies_name_the_field(data: object, message: str) -> None:
    with pytest.raises(PolicyError) as caught:
        TrafficPolicy.from_dict(data)
    assert message in str(caught.value)
    assert isinstance(caught.value, InvalidInput)


def test_constructor_validates_too() -> None:
    with pytest.raises(PolicyError, match="weights: version 0"):
        TrafficPolicy({0: 1})
    with pytest.raises(PolicyError, match=r"weights\[2\]: must be >= 0"):
        TrafficPolicy({1: 1, 2: -1})
    with pytest.raises(PolicyError, match="shadow.fraction"):
        ShadowPolicy(2, 0.0)


def test_dict_round_trip_through_json() -> None:
    policies = [
        TrafficPolicy({1: 90, 2: 10}),
        TrafficPolicy({2: 0.25, 1: 0.75, 3: 0}, sticky=True, shadow=ShadowPolicy(4, 0.05)),
    ]
    for policy in policies:
        again = TrafficPolicy.from_dict(json.loads(json.dumps(policy.to_dict())))
        assert again == policy and hash(again) == hash(policy)
    assert policies[0].to_dict() == {
        "format": 1,
        "weights": {"1": 90, "2": 10},
        "sticky": False,
        "shadow": None,
    }
    assert list(policies[1].to_dict()["weights"]) == ["1", "2", "3"]


def test_a_policy_is_immutable_and_owns_its_weights() -> None:
    weights = {1: 90.0, 2: 10.0}
    policy = TrafficPolicy(weights)
    weights[1] = 0.0
    assert policy.weights[1] == 90.0
    with pytest.raises(TypeError):
        policy.weights[1] = 5.0  # type: ignore[index]


# ---- operations ----------------------------------------------------------------------------------


def test_promote_sends_everything_to_one_version_and_clears_shadow() -> None:
    current = TrafficPolicy({1: 90, 2: 10}, sticky=True, shadow=ShadowPolicy(3, 0.1))
    promoted = promote(current, 2)
    assert promoted == TrafficPolicy({2: 100}, sticky=True)
    assert current.weights == {1: 90, 2: 10}  # the input is untouched
    assert promote(None, 3) == TrafficPolicy({3: 100})


def test_split_keeps_the_shadow_and_stickiness_unless_told() -> None:
    current = TrafficPolicy({1: 100}, sticky=True, shadow=ShadowPolicy(3, 0.1))
    assert split(current, {1: 80, 2: 20}) == TrafficPolicy({1: 80, 2: 20}, True, ShadowPolicy(3, 0.1))
    assert split(current, {1: 80, 2: 20}, sticky=False).sticky is False
    assert split(current, {3: 100}).shadow is None  # the candidate now takes everything
    assert split(None, {1: 1, 2: 1}) == TrafficPolicy({1: 1, 2: 1})
    with pytest.raises(PolicyError, match="at least one"):
        split(current, {1: 0})


def test_set_and_clear_shadow() -> None:
    current = TrafficPolicy({1: 90, 2: 10})
    shadowed = set_shadow(current, 3, 0.2)
    assert shadowed.shadow == ShadowPolicy(3, 0.2) and shadowed.weights == current.weights
    assert clear_shadow(shadowed) == current
    assert set_shadow(None, 2, 0.5, default_version=1) == TrafficPolicy({1: 100}, shadow=ShadowPolicy(2, 0.5))
    with pytest.raises(PolicyError, match="no traffic policy"):
        set_shadow(None, 2, 0.5)
    with pytest.raises(PolicyError, match="no traffic policy"):
        clear_shadow(None)


# ---- shadow comparison ---------------------------------------------------------------------------


def test_shadow_comparison_per_output_kind() -> None:
    probs_a = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]], dtype=np.float32)
    probs_b = np.array([[0.8, 0.2], [0.3, 0.7], [0.4, 0.6], [0.1, 0.9]], dtype=np.float32)
    primary: dict[str, Array] = {
        "probabilities": probs_a,
        "embedding": np.array([1.0, 2.0, 3.0], dtype=np.float16),
        "label": np.array([0, 1, 0, 1], dtype=np.int64),
        "text": np.array([b"a", b"b"], dtype=object),
        "only_primary": np.zeros(2),
        "shape": np.zeros((2, 2)),
    }
    shadow: dict[str, Array] = {
        "probabilities": probs_b,
        "embedding": np.array([1.5, 2.0, 2.0], dtype=np.float16),
        "label": np.array([0, 1, 1, 1], dtype=np.int64),
        "text": np.array([b"a", b"c"], dtype=object),
        "only_shadow": np.zeros(2),
        "shape": np.zeros((2, 3)),
    }
    result = ShadowComparison.compare(primary, shadow)
    assert result.argmax_agreement == {"probabilities": 0.75}
    assert result.mean_abs_diff == {"embedding": pytest.approx(0.5)}
    assert result.exact_match == {"label": 0.75, "text": 0.5}
    assert result.mismatched == ("only_primary", "only_shadow", "shape")


def test_shadow_comparison_of_empty_outputs_is_full_agreement() -> None:
    empty: dict[str, Array] = {
        "scores": np.zeros((0, 3), dtype=np.float32),
        "vector": np.zeros(0, dtype=np.float32),
    }
    result = ShadowComparison.compare(empty, empty)
    assert result.argmax_agreement == {"scores": 1.0} and result.mean_abs_diff == {"vector": 0.0}
