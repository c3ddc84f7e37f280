"""Reference distributions of predictions: the `Reference` type and a version folder's reference.json.

A reference comes from the file (`load_references`), is captured from the first predictions, or is set
at run time. Classification references hold class counts and a top-1 confidence histogram over
CONFIDENCE_EDGES; numeric references hold a sample of values.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from serving.drift.config import OutputKind
from serving.errors import ModelConfigError

CONFIDENCE_EDGES = tuple(round(0.1 * i, 10) for i in range(11))  # 0.0, 0.1, …, 1.0
N_CONFIDENCE_BINS = len(CONFIDENCE_EDGES) - 1
REFERENCE_FILE = "reference.json"


@dataclass(frozen=True)
class Reference:
    kind: OutputKind
    n: int  # prediction rows behind it
    class_counts: tuple[int, ...] = ()  # classification
    confidence_counts: tuple[int, ...] = ()  # classification, over CONFIDENCE_EDGES
    values: tuple[float, ...] = ()  # numeric: a sample of values
    source: str = "set"  # "file" | "captured" | "set"

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], source: str = "set") -> Reference:
        kind = obj.get("kind")
        if kind == "classification":
            hist = obj["confidence_hist"]
            if len(hist["edges"]) != len(CONFIDENCE_EDGES) or not np.allclose(
                hist["edges"], CONFIDENCE_EDGES
            ):
                raise ValueError(f"confidence_hist edges must be {list(CONFIDENCE_EDGES)}")
            counts = tuple(int(c) for c in hist["counts"])
            if len(counts) != N_CONFIDENCE_BINS or not obj["class_counts"]:
                raise ValueError(
                    f"need {N_CONFIDENCE_BINS} confidence_hist counts and at least one class count"
                )
            return cls(
                "classification",
                int(obj["n"]),
                tuple(int(c) for c in obj["class_counts"]),
                counts,
                source=source,
            )
        if kind == "numeric":
            values = tuple(float(v) for v in obj["values"])
            return cls("numeric", int(obj.get("n", len(values))), values=values, source=source)
        raise ValueError(f"reference kind must be 'classification' or 'numeric', got {kind!r}")

    def to_json(self, output: str) -> dict[str, Any]:
        if self.kind == "numeric":
            return {"output": output, "kind": "numeric", "values": list(self.values), "n": self.n}
        hist = {"edges": list(CONFIDENCE_EDGES), "counts": list(self.confidence_counts)}
        return {
            "output": output,
            "kind": self.kind,
            "class_counts": list(self.class_counts),
            "confidence_hist": hist,
            "n": self.n,
        }


def load_references(path: Path) -> dict[str, Reference]:
    """Read a version folder's reference.json: one object, or a list of objects, each naming its output."""
    try:
        data = json.loads(path.read_text())
        objects = data if isinstance(data, list) else [data]
        return {str(obj["output"]): Reference.from_json(obj, source="file") for obj in objects}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelConfigError(f"{path}: unusable drift reference: {exc}") from exc
