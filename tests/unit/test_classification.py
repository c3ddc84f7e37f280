"""Triton's classification extension: top-k "score:index[:label]" strings per row."""

from __future__ import annotations

import numpy as np
import pytest

from serving.core.classification import class_count, classify
from serving.errors import InvalidInput


def test_top_classes_per_row_with_labels() -> None:
    scores = np.array([[0.1, 0.7, 0.2], [0.5, 0.25, 0.25]], dtype=np.float32)
    out = classify(scores, 2, ["cat", "dog", "eel"], batching=True, output="p")
    assert out.shape == (2, 2)
    assert out.tolist() == [[b"0.700000:1:dog", b"0.200000:2:eel"], [b"0.500000:0:cat", b"0.250000:1:dog"]]


def test_without_labels_and_without_batching() -> None:
    out = classify(np.array([3, 9, 1], dtype=np.int32), 5, [], batching=False, output="p")
    assert out.tolist() == [b"9.000000:1", b"3.000000:0", b"1.000000:2"]  # k capped at 3 classes


@pytest.mark.parametrize("bad", [0, -1, True, "2", 1.5])
def test_class_count_must_be_a_positive_integer(bad: object) -> None:
    with pytest.raises(InvalidInput, match="output 'p': parameter 'classification'"):
        class_count(bad, "p")


def test_non_numeric_scores_are_refused() -> None:
    with pytest.raises(InvalidInput, match="needs numeric scores"):
        classify(np.array([b"a"], dtype=object), 1, [], batching=False, output="p")
