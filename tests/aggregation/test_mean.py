"""Tests for fedpeft.aggregation.mean: weighted means, weights, flatten."""

from __future__ import annotations

import numpy as np
import pytest

from fedpeft.aggregation import (
    add_params,
    example_weights,
    flatten,
    global_norm,
    unflatten,
    uniform_weights,
    weighted_mean,
)
from fedpeft.types import Params


def _p(**arrays: list[float] | list[list[float]]) -> Params:
    return {k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()}


def test_weighted_mean_matches_hand_computation() -> None:
    updates = [
        _p(a=[1.0, 2.0], b=[[0.0]]),
        _p(a=[3.0, 0.0], b=[[6.0]]),
        _p(a=[-1.0, 4.0], b=[[3.0]]),
    ]
    # weights 1, 2, 1 -> sum 4
    # a: (1*1 + 2*3 + 1*(-1)) / 4 = 6/4 = 1.5;  (1*2 + 2*0 + 1*4) / 4 = 1.5
    # b: (0 + 12 + 3) / 4 = 3.75
    out = weighted_mean(updates, [1, 2, 1])
    np.testing.assert_array_equal(out["a"], np.array([1.5, 1.5], dtype=np.float32))
    np.testing.assert_array_equal(out["b"], np.array([[3.75]], dtype=np.float32))
    assert out["a"].dtype == np.float32 and out["b"].shape == (1, 1)


def test_weighted_mean_accumulates_in_float64() -> None:
    # In float32, 1e8 + 1 == 1e8, so a float32 running sum gives 0; the true
    # mean is 1/3.
    updates = [_p(x=[1e8]), _p(x=[1.0]), _p(x=[-1e8])]
    out = weighted_mean(updates, [1.0, 1.0, 1.0])
    assert out["x"][0] == np.float32(1.0 / 3.0)


def test_weighted_mean_does_not_mutate_inputs() -> None:
    updates = [_p(a=[1.0, 2.0]), _p(a=[3.0, 4.0])]
    before = [u["a"].copy() for u in updates]
    out = weighted_mean(updates, [1.0, 1.0])
    out["a"][:] = 99.0
    for u, b in zip(updates, before, strict=True):
        np.testing.assert_array_equal(u["a"], b)


@pytest.mark.parametrize(
    ("weights", "match"),
    [
        ([1.0], "expected 2 weights"),
        ([1.0, float("nan")], "finite"),
        ([1.0, float("inf")], "finite"),
        ([1.0, -0.5], ">= 0"),
        ([0.0, 0.0], "positive sum"),
    ],
)
def test_weighted_mean_rejects_bad_weights(weights: list[float], match: str) -> None:
    updates = [_p(a=[1.0]), _p(a=[2.0])]
    with pytest.raises(ValueError, match=match):
        weighted_mean(updates, weights)


def test_weighted_mean_rejects_bad_updates() -> None:
    with pytest.raises(ValueError, match="zero updates"):
        weighted_mean([], [])
    with pytest.raises(ValueError, match="update 1 tensor 'a' has shape"):
        weighted_mean([_p(a=[1.0, 2.0]), _p(a=[1.0])], [1, 1])
    with pytest.raises(ValueError, match="update 1 has the wrong keys"):
        weighted_mean([_p(a=[1.0]), _p(b=[1.0])], [1, 1])
    with pytest.raises(ValueError, match="NaN"):
        weighted_mean([_p(a=[1.0]), _p(a=[float("nan")])], [1, 1])
    with pytest.raises(ValueError, match="NaN"):
        weighted_mean([_p(a=[float("nan")]), _p(a=[1.0])], [1, 1])


def test_example_and_uniform_weights() -> None:
    np.testing.assert_allclose(example_weights([10, 30, 60]), [0.1, 0.3, 0.6])
    np.testing.assert_allclose(uniform_weights(4), [0.25] * 4)
    with pytest.raises(ValueError, match="positive sum"):
        example_weights([0, 0])
    with pytest.raises(ValueError, match=">= 0"):
        example_weights([5, -1])
    with pytest.raises(ValueError, match="non-empty"):
        example_weights([])
    with pytest.raises(ValueError, match="positive integer"):
        uniform_weights(0)


def test_flatten_uses_sorted_keys_and_round_trips() -> None:
    params = _p(z=[[1.0, 2.0], [3.0, 4.0]], a=[5.0])
    vec = flatten(params)
    np.testing.assert_array_equal(vec, [5.0, 1.0, 2.0, 3.0, 4.0])  # "a" before "z"
    assert vec.dtype == np.float64
    back = unflatten(vec, params)
    assert set(back) == {"a", "z"}
    for k in params:
        np.testing.assert_array_equal(back[k], params[k])
        assert back[k].dtype == np.float32
    with pytest.raises(ValueError, match="5 elements"):
        unflatten(np.zeros(4), params)


def test_add_params_and_global_norm() -> None:
    out = add_params(_p(a=[1.0, 1.0], b=[0.0]), _p(a=[2.0, -1.0], b=[4.0]))
    np.testing.assert_array_equal(out["a"], [3.0, 0.0])
    assert global_norm(_p(a=[3.0], b=[4.0])) == 5.0  # norm over all tensors
    with pytest.raises(ValueError, match="step has the wrong keys"):
        add_params(_p(a=[1.0]), _p(b=[1.0]))
