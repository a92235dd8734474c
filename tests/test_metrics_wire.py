"""Metrics against scikit-learn; the wire format's byte counts and errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import f1_score

from fedpeft.metrics import accuracy, macro_f1
from fedpeft.wire import deserialize, payload_bytes, serialize


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4)), min_size=1, max_size=60)
)
def test_macro_f1_matches_sklearn(pairs: list[tuple[int, int]]) -> None:
    labels = np.array([p[0] for p in pairs])
    preds = np.array([p[1] for p in pairs])
    expected = f1_score(labels, preds, average="macro", zero_division=0)
    assert macro_f1(labels, preds, 5) == pytest.approx(expected)
    assert accuracy(labels, preds) == pytest.approx(np.mean(labels == preds))


def test_serialized_size_is_counted_exactly() -> None:
    params = {
        "prompt": np.ones((20, 384), np.float32),
        "head.bias": np.zeros(2, np.float32),
    }
    blob = serialize(params)
    assert payload_bytes(params) == len(blob)
    assert len(blob) > 20 * 384 * 4 + 2 * 4  # the data plus a JSON header
    back = deserialize(blob)
    np.testing.assert_array_equal(back["prompt"], params["prompt"])


def test_corrupt_payload_raises_value_error() -> None:
    blob = serialize({"w": np.ones(10, np.float32)})
    with pytest.raises(ValueError, match="corrupt payload"):
        deserialize(blob[: len(blob) // 2])
