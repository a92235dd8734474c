"""Tests for fedpeft.privacy.clipping: flat L2 clipping of a whole update."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fedpeft.aggregation import global_norm
from fedpeft.privacy import clip_factor, clip_update
from fedpeft.types import Params


def _p(**arrays: list[float]) -> Params:
    return {k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()}


def test_clip_matches_hand_computation() -> None:
    # norm = sqrt(3² + 4² + 0²) = 5; C = 1 -> factor 1/5
    update = _p(a=[3.0, 4.0], b=[0.0])
    clipped, norm = clip_update(update, 1.0)
    assert norm == 5.0
    np.testing.assert_allclose(clipped["a"], [0.6, 0.8], rtol=1e-6)
    np.testing.assert_array_equal(clipped["b"], [0.0])


def test_update_within_bound_is_unchanged_copy() -> None:
    update = _p(a=[0.3, 0.4])
    clipped, norm = clip_update(update, 1.0)
    assert norm == pytest.approx(0.5)
    np.testing.assert_array_equal(clipped["a"], update["a"])
    assert clipped["a"] is not update["a"]


def test_zero_update_unchanged_and_finite() -> None:
    update = _p(a=[0.0, 0.0], b=[0.0])
    clipped, norm = clip_update(update, 0.5)
    assert norm == 0.0
    for name in update:
        np.testing.assert_array_equal(clipped[name], update[name])
        assert np.all(np.isfinite(clipped[name]))
    assert clip_factor(0.0, 0.5) == 1.0


def test_empty_update() -> None:
    clipped, norm = clip_update({}, 1.0)
    assert clipped == {} and norm == 0.0


@pytest.mark.parametrize("value", [1e30, 3e38])
def test_huge_update_clipped_without_overflow(value: float) -> None:
    update = {"a": np.full((100, 10), value, dtype=np.float32)}
    clipped, norm = clip_update(update, 2.0)
    assert norm == pytest.approx(float(np.float32(value)) * math.sqrt(1000), rel=1e-6)
    assert math.isfinite(norm)
    assert global_norm(clipped) <= 2.0
    assert global_norm(clipped) == pytest.approx(2.0, rel=1e-5)


def test_inputs_not_mutated() -> None:
    update = _p(a=[30.0, 40.0])
    before = update["a"].copy()
    clip_update(update, 1.0)
    np.testing.assert_array_equal(update["a"], before)


@pytest.mark.parametrize("bad", [0.0, -1.0, math.inf, math.nan])
def test_bad_bound_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="max_norm"):
        clip_update(_p(a=[1.0]), bad)


def test_nan_update_refused() -> None:
    with pytest.raises(ValueError, match="NaN"):
        clip_update(_p(a=[1.0, math.nan]), 1.0)


_floats = st.floats(allow_nan=False, allow_infinity=False, width=32)  # all float32


@settings(max_examples=60, deadline=None)
@given(
    a=arrays(np.float32, st.integers(0, 20), elements=_floats),
    b=arrays(np.float32, (3, 2), elements=_floats),
    c=st.floats(1e-6, 1e6),
)
def test_clipped_norm_never_exceeds_bound(
    a: np.ndarray, b: np.ndarray, c: float
) -> None:
    update = {"a": a, "b": b}
    clipped, norm = clip_update(update, c)
    assert norm == pytest.approx(global_norm(update), rel=1e-12)
    assert global_norm(clipped) <= c
    if norm <= c:  # within the bound: unchanged
        np.testing.assert_array_equal(clipped["a"], a)
    else:  # direction kept, norm at the bound (up to float32 rounding)
        assert global_norm(clipped) == pytest.approx(c, rel=1e-5)
