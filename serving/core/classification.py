"""Triton's classification extension: a requested output with `classification` (class_count) in its
parameters comes back as the top classes of each row instead of the raw scores.

Each result is the string "<score>:<index>" or, when the output declares `label_filename` in
config.pbtxt, "<score>:<index>:<label>" (the label on line <index> of that file, in the model's folder).
Scores are formatted as C++'s std::to_string does (six decimals), as Triton writes them. The reply is
BYTES of shape [rows, k] for a batching model and [k] otherwise, k = min(class_count, classes per row).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from serving.errors import InvalidInput
from serving.types import Array

CLASSIFICATION_PARAMETER = "classification"


def class_count(value: object, output: str) -> int:
    """The requested class count; InvalidInput unless a positive integer."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInput(
            f"output '{output}': parameter '{CLASSIFICATION_PARAMETER}' must be a positive integer, "
            f"got {value!r}"
        )
    return value


def classify(scores: Array, count: int, labels: Sequence[str], batching: bool, output: str) -> Array:
    """The top `count` classes of each row of `scores`, best first (ties: lower index first)."""
    if scores.dtype.kind not in "biuf":
        raise InvalidInput(f"output '{output}': classification needs numeric scores, not {scores.dtype}")
    rows = scores.reshape(scores.shape[0], -1) if batching and scores.ndim > 0 else scores.reshape(1, -1)
    k = min(count, rows.shape[1])
    order = np.argsort(-rows.astype(np.float64), axis=1, kind="stable")[:, :k]
    result = np.empty(order.shape, dtype=object)
    for r in range(order.shape[0]):
        for j, index in enumerate(order[r]):
            text = f"{float(rows[r, index]):f}:{int(index)}"
            if int(index) < len(labels):
                text += f":{labels[int(index)]}"
            result[r, j] = text.encode("utf-8")
    return result if batching else result.reshape(k)
