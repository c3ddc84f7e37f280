"""Which version of a model serves a request: the model's traffic policy, pure and without I/O.

A `TrafficPolicy` says how a model's traffic is split across its versions (relative weights), whether
requests that carry a routing key stick to one version, and which candidate gets a shadow copy of a
fraction of the requests. Operations (`split`, `promote`, `set_shadow`, `clear_shadow`) return a NEW
policy; nothing here mutates one. `serving/traffic/store.py` persists policies; callers hold the current
one and swap it whole.

Choosing a version (`choose_version`):
  * no policy → the highest READY version (the model's default);
  * a policy → only versions with weight > 0 that are READY, with the weights renormalised over them;
    if none of the weighted versions is ready → Unavailable (never a silent fallback to an unvetted version);
  * sticky and a routing key → weighted rendezvous hashing (below); otherwise a random draw with the
    weights from an injected `random.Random`.

Weighted rendezvous (highest-random-weight) hashing. For key k and each candidate version v:
    u_v = blake2b(model \\0 v \\0 k) as a 53-bit float in (0, 1)      (never Python's salted hash())
    score_v = -w_v / ln(u_v)                                           (ln(u_v) < 0, so score_v > 0)
and the version with the highest score wins. Properties:
  (a) Deterministic: u_v depends only on (model, version, key), so every process and replica picks the
      same version while the weights and the ready set are unchanged.
  (b) Minimal movement: each score depends only on its own version's weight. Raising w_v raises score_v
      and leaves every other score unchanged, so a key whose winner was v still wins with v, and a key
      whose winner was x either keeps x or now picks v: keys only move TO v, never between other versions.
      Likewise lowering w_v, or v leaving the ready set, moves only keys that were on v.
  (c) Proportional: -ln(u_v)/w_v is exponentially distributed with rate w_v, and the smallest of
      independent exponentials is the one with rate w_v with probability w_v / Σw; the highest score is
      that smallest one, so over many keys the split matches the weights.

Errors: PolicyError (an InvalidInput → INVALID_ARGUMENT) names the field that is wrong; Unavailable when
no weighted version is ready.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from serving.errors import InvalidInput, Unavailable
from serving.rollout.plan import RolloutError, RolloutState
from serving.types import Array, TensorMap

FORMAT = 1  # the "format" field of a policy dict / traffic.json
PROMOTED_WEIGHT = 100.0
_POLICY_KEYS = frozenset({"format", "weights", "sticky", "shadow", "rollout"})
_SHADOW_KEYS = frozenset({"version", "fraction"})


class PolicyError(InvalidInput):
    """A traffic policy, its file or an operation on it is invalid; the message names the field or file."""


# ---- the policy --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShadowPolicy:
    """Send a copy of `fraction` of the requests to `version`; its answers are compared, never returned."""

    version: int
    fraction: float

    def __post_init__(self) -> None:
        _check_version("shadow.version", self.version)
        fraction = _number("shadow.fraction", self.fraction)
        if not 0.0 < fraction <= 1.0:
            raise PolicyError(f"shadow.fraction: must be in (0, 1], got {self.fraction!r}")
        object.__setattr__(self, "fraction", fraction)

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "fraction": self.fraction}

    @classmethod
    def from_dict(cls, data: object) -> ShadowPolicy:
        fields = _object("shadow", data, _SHADOW_KEYS)
        missing = sorted(_SHADOW_KEYS - fields.keys())
        if missing:
            raise PolicyError(f"shadow: missing {', '.join(missing)}")
        return cls(version=fields["version"], fraction=fields["fraction"])


@dataclass(frozen=True)
class TrafficPolicy:
    """A model's traffic: relative weights per version (need not sum to 100), stickiness, shadow, and the
    progressive rollout that set them (serving/rollout), persisted with them in one atomic write."""

    weights: Mapping[int, float]
    sticky: bool = False
    shadow: ShadowPolicy | None = None
    rollout: RolloutState | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.weights, Mapping):
            raise PolicyError(
                f"weights: must be a mapping of version → weight, got {type(self.weights).__name__}"
            )
        checked: dict[int, float] = {}
        for version, weight in sorted(self.weights.items(), key=lambda item: str(item[0])):
            _check_version("weights", version)
            value = _number(f"weights[{version}]", weight)
            if value < 0.0:
                raise PolicyError(f"weights[{version}]: must be >= 0, got {weight!r}")
            checked[version] = value
        if not any(w > 0.0 for w in checked.values()):
            raise PolicyError("weights: at least one version needs a weight > 0")
        if not isinstance(self.sticky, bool):
            raise PolicyError(f"sticky: must be true or false, got {self.sticky!r}")
        if self.shadow is not None and not isinstance(self.shadow, ShadowPolicy):
            raise PolicyError(f"shadow: must be a ShadowPolicy or None, got {type(self.shadow).__name__}")
        active = [v for v, w in checked.items() if w > 0.0]
        if self.shadow is not None and active == [self.shadow.version]:
            raise PolicyError(
                f"shadow.version: version {self.shadow.version} already takes all the traffic; "
                "a shadow copy would never be sent"
            )
        if self.rollout is not None and not isinstance(self.rollout, RolloutState):
            raise PolicyError(f"rollout: must be a RolloutState or None, got {type(self.rollout).__name__}")
        object.__setattr__(self, "weights", MappingProxyType(dict(sorted(checked.items()))))

    def __hash__(self) -> int:
        return hash((tuple(self.weights.items()), self.sticky, self.shadow, self.rollout))

    def describe(self) -> str:
        """Short human form, e.g. `1=90 2=10 sticky shadow=3@5%`."""
        parts = [f"{v}={_plain(w)}" for v, w in self.weights.items()]
        if self.sticky:
            parts.append("sticky")
        if self.shadow is not None:
            parts.append(f"shadow={self.shadow.version}@{self.shadow.fraction:.4g}")
        if self.rollout is not None:
            parts.append(f"rollout={self.rollout.phase}")
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """The plain, JSON-ready form (the traffic.json format); weights keyed by version strings.
        `rollout` appears only while a rollout set the policy."""
        data: dict[str, Any] = {
            "format": FORMAT,
            "weights": {str(v): _plain(w) for v, w in self.weights.items()},
            "sticky": self.sticky,
            "shadow": None if self.shadow is None else self.shadow.to_dict(),
        }
        if self.rollout is not None:
            data["rollout"] = self.rollout.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: object) -> TrafficPolicy:
        """Parse and validate the plain form; unknown fields are errors (a typo must not pass silently)."""
        fields = _object("policy", data, _POLICY_KEYS)
        if fields.get("format", FORMAT) != FORMAT:
            raise PolicyError(f"format: unsupported format {fields['format']!r} (this server reads {FORMAT})")
        if "weights" not in fields:
            raise PolicyError("weights: missing")
        raw = fields["weights"]
        if not isinstance(raw, Mapping):
            raise PolicyError(f"weights: must be an object of version → weight, got {type(raw).__name__}")
        shadow, rollout = fields.get("shadow"), fields.get("rollout")
        try:
            state = None if rollout is None else RolloutState.from_dict(rollout)
        except RolloutError as exc:
            raise PolicyError(str(exc)) from None
        return cls(
            weights=_parse_weights(raw),
            sticky=fields.get("sticky", False),
            shadow=None if shadow is None else ShadowPolicy.from_dict(shadow),
            rollout=state,
        )


def _parse_weights(raw: Mapping[Any, Any]) -> dict[int, float]:
    weights: dict[int, float] = {}
    for key, weight in raw.items():
        text = str(key)
        if isinstance(key, bool) or not (text.isascii() and text.isdigit()) or int(text) <= 0:
            raise PolicyError(f"weights: version {key!r} is not a positive integer")
        if int(text) in weights:
            raise PolicyError(f"weights: version {int(text)} appears more than once")
        weights[int(text)] = weight
    return weights


def _object(where: str, data: object, allowed: frozenset[str]) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise PolicyError(f"{where}: must be an object, got {type(data).__name__}")
    unknown = sorted(str(k) for k in data if k not in allowed)
    if unknown:
        raise PolicyError(
            f"{where}: unknown field(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})"
        )
    return data


def _check_version(where: str, version: object) -> None:
    if isinstance(version, bool) or not isinstance(version, int) or version <= 0:
        raise PolicyError(f"{where}: version {version!r} is not a positive integer")


def _number(where: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise PolicyError(f"{where}: must be a finite number, got {value!r}")
    return float(value)


def _plain(weight: float) -> int | float:
    return int(weight) if weight.is_integer() else weight


# ---- operations: each returns a new policy -----------------------------------------------------------


def split(
    current: TrafficPolicy | None, weights: Mapping[int, float], sticky: bool | None = None
) -> TrafficPolicy:
    """New weights; stickiness as given (None keeps the current one) and the current shadow is kept."""
    keep_sticky = current.sticky if current is not None else False
    shadow = current.shadow if current is not None else None
    if shadow is not None and [v for v, w in weights.items() if w > 0] == [shadow.version]:
        shadow = None  # the candidate now takes all traffic: nothing left to shadow
    return TrafficPolicy(weights, keep_sticky if sticky is None else sticky, shadow)


def promote(current: TrafficPolicy | None, version: int) -> TrafficPolicy:
    """All traffic to `version` ({version: 100}); shadow cleared; stickiness kept."""
    return TrafficPolicy({version: PROMOTED_WEIGHT}, current.sticky if current is not None else False, None)


def set_shadow(
    current: TrafficPolicy | None, version: int, fraction: float, *, default_version: int | None = None
) -> TrafficPolicy:
    """Shadow `fraction` of the requests to `version`. Without a policy, the caller names the version that
    serves by default now (`default_version`) and it is pinned ({default_version: 100}), so that the
    primary does not move when another version loads while the shadow runs."""
    if current is None:
        if default_version is None:
            raise PolicyError("shadow: the model has no traffic policy; name the version that serves primary")
        current = TrafficPolicy({default_version: PROMOTED_WEIGHT})
    return TrafficPolicy(current.weights, current.sticky, ShadowPolicy(version, fraction))


def clear_shadow(current: TrafficPolicy | None) -> TrafficPolicy:
    if current is None:
        raise PolicyError("shadow: the model has no traffic policy, so no shadow to clear")
    return TrafficPolicy(current.weights, current.sticky, None)


# ---- choosing a version ------------------------------------------------------------------------------


def choose_version(
    model: str,
    policy: TrafficPolicy | None,
    ready_versions: Collection[int],
    routing_key: str | None,
    rng: random.Random,
    states: Mapping[int, str] | None = None,
) -> int:
    """The version that serves one request (see the module docstring). `states` (version → state name)
    only enriches the Unavailable message."""
    ready = set(ready_versions)
    if policy is None:
        if not ready:
            raise Unavailable(f"model '{model}' has no ready version{_states_text(states)}")
        return max(ready)
    candidates = {v: w for v, w in policy.weights.items() if w > 0.0 and v in ready}
    if not candidates:
        raise Unavailable(
            f"model '{model}': no version of its traffic policy ({policy.describe()}) is ready"
            f"{_states_text(states)}; ready versions: {sorted(ready)}"
        )
    if policy.sticky and routing_key:
        return rendezvous_choice(model, candidates, routing_key)
    return weighted_choice(candidates, rng)


def _states_text(states: Mapping[int, str] | None) -> str:
    if not states:
        return ""
    return " (states: " + ", ".join(f"{v}={s}" for v, s in sorted(states.items())) + ")"


def weighted_choice(weights: Mapping[int, float], rng: random.Random) -> int:
    """A random version, each with probability weight / Σweights (weights > 0)."""
    versions = sorted(weights)
    threshold = rng.random() * math.fsum(weights.values())
    cumulative = 0.0
    for version in versions:
        cumulative += weights[version]
        if threshold < cumulative:
            return version
    return versions[-1]  # rounding at the top end


def hash_unit(model: str, version: int, key: str) -> float:
    """A stable pseudo-random number in the open interval (0, 1) for (model, version, key)."""
    data = f"{model}\0{version}\0{key}".encode("utf-8", "surrogatepass")
    bits = int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big") >> 11  # 53 bits
    return (bits + 0.5) / float(1 << 53)


def rendezvous_choice(model: str, weights: Mapping[int, float], key: str) -> int:
    """Weighted rendezvous hashing over versions with weight > 0: the highest -w / ln(u) wins."""
    best_version, best_score = 0, -1.0
    for version in sorted(weights):
        score = -weights[version] / math.log(hash_unit(model, version, key))
        if score > best_score:
            best_version, best_score = version, score
    return best_version


def should_shadow(
    policy: TrafficPolicy | None,
    primary: int,
    rng: random.Random,
    ready_versions: Collection[int] | None = None,
) -> int | None:
    """The version to send a shadow copy of this request to, or None. Never the version that served it
    (`primary`), and, when `ready_versions` is given, only a ready one (a shadow is best effort)."""
    if policy is None or policy.shadow is None:
        return None
    shadow = policy.shadow
    if shadow.version == primary or (ready_versions is not None and shadow.version not in ready_versions):
        return None
    return shadow.version if rng.random() < shadow.fraction else None


# ---- comparing a shadow's answers with the primary's -------------------------------------------------


@dataclass(frozen=True)
class ShadowComparison:
    """How a shadow's outputs agree with the primary's, per output name.

    argmax_agreement: 2-D floating outputs [N, C] (scores, probabilities): fraction of rows with equal argmax.
    mean_abs_diff:    other floating outputs: mean |primary - shadow|.
    exact_match:      integer, bool and BYTES outputs (labels, ids, text): fraction of equal elements.
    mismatched:       outputs only one side returned, whose shapes differ, or BYTES on one side only.
    An output with no elements counts as full agreement (1.0, or 0.0 difference).
    """

    argmax_agreement: Mapping[str, float]
    mean_abs_diff: Mapping[str, float]
    exact_match: Mapping[str, float]
    mismatched: tuple[str, ...]

    @classmethod
    def compare(cls, primary: TensorMap, shadow: TensorMap) -> ShadowComparison:
        argmax: dict[str, float] = {}
        diff: dict[str, float] = {}
        exact: dict[str, float] = {}
        mismatched = sorted(set(primary) ^ set(shadow))
        for name in sorted(set(primary) & set(shadow)):
            a, b = np.asarray(primary[name]), np.asarray(shadow[name])
            if a.shape != b.shape or (a.dtype.kind == "O") != (b.dtype.kind == "O"):
                mismatched.append(name)
            elif _is_float(a) and _is_float(b) and a.ndim == 2 and a.shape[1] > 0:
                argmax[name] = float(np.mean(np.argmax(a, axis=1) == np.argmax(b, axis=1))) if a.size else 1.0
            elif _is_float(a) or _is_float(b):
                diff[name] = (
                    float(np.mean(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0
                )
            else:
                exact[name] = float(np.mean(a == b)) if a.size else 1.0
        return cls(argmax, diff, exact, tuple(sorted(mismatched)))


def _is_float(array: Array) -> bool:
    return bool(array.dtype.kind == "f")
