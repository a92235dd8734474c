"""Tests for the dynamic heterogeneity-aware weights (seed rule)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedpeft.aggregation import (
    DistanceScale,
    client_distances,
    dynamic_aggregate,
    dynamic_weights,
    example_weights,
    scale_distances,
)
from fedpeft.types import Params


def _p(**arrays: list[float]) -> Params:
    return {k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()}


# Two tensors per client so the norm must span both: client 0 is (3, 0 | 4),
# client 1 is (−3, 0 | −4), client 2 is 0. Uniform mean = 0, so d = (5, 5, 0).
DELTAS = [_p(a=[3.0, 0.0], b=[4.0]), _p(a=[-3.0, 0.0], b=[-4.0]), _p(a=[0, 0], b=[0])]
COUNTS = [10, 20, 30]


def test_distances_use_uniform_mean_and_concatenated_norm() -> None:
    np.testing.assert_allclose(client_distances(DELTAS), [5.0, 5.0, 0.0])
    # The mean is uniform even though counts differ: (0 + 2) / 2 = 1 -> d = (1, 1).
    np.testing.assert_allclose(client_distances([_p(x=[0.0]), _p(x=[2.0])]), [1, 1])


def test_literal_seed_formula_by_hand() -> None:
    gamma = 0.1
    raw = [
        10 / 60 * math.exp(-gamma * 5),
        20 / 60 * math.exp(-gamma * 5),
        30 / 60 * math.exp(-gamma * 0),
    ]
    expected = [r / sum(raw) for r in raw]
    result = dynamic_weights(DELTAS, COUNTS, gamma=gamma, distance_scale="none")
    np.testing.assert_allclose(result.weights, expected, rtol=1e-12)
    np.testing.assert_allclose(result.distances, [5.0, 5.0, 0.0])
    assert math.isclose(float(result.weights.sum()), 1.0)


def test_dynamic_aggregate_applies_weighted_step() -> None:
    global_params = _p(a=[1.0, 1.0], b=[1.0])
    new, result = dynamic_aggregate(
        global_params, DELTAS, COUNTS, gamma=0.1, distance_scale="none"
    )
    w = result.weights
    expected_a0 = 1.0 + w[0] * 3.0 + w[1] * -3.0
    expected_b = 1.0 + w[0] * 4.0 + w[1] * -4.0
    np.testing.assert_allclose(new["a"], [expected_a0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(new["b"], [expected_b], rtol=1e-6)
    np.testing.assert_array_equal(global_params["a"], [1.0, 1.0])  # not mutated


def test_median_scale_by_hand() -> None:
    # d = (5, 5, 0), median 5 -> scaled (1, 1, 0).
    np.testing.assert_allclose(
        scale_distances(np.array([5.0, 5.0, 0.0]), "median"), [1, 1, 0]
    )
    np.testing.assert_allclose(
        scale_distances(np.array([2.0, 4.0]), "mean"), [2 / 3, 4 / 3]
    )
    # Zero median (identical updates) divides by 1, not by 0.
    np.testing.assert_array_equal(scale_distances(np.zeros(3), "median"), np.zeros(3))
    result = dynamic_weights(DELTAS, COUNTS, gamma=2.0, distance_scale="median")
    raw = [10 * math.exp(-2.0), 20 * math.exp(-2.0), 30.0]
    np.testing.assert_allclose(result.weights, [r / sum(raw) for r in raw])


@pytest.mark.parametrize("scale", ["none", "median", "mean"])
def test_gamma_zero_is_fedavg(scale: DistanceScale) -> None:
    result = dynamic_weights(DELTAS, COUNTS, gamma=0.0, distance_scale=scale)
    np.testing.assert_allclose(result.weights, example_weights(COUNTS))


def test_identical_updates_give_fedavg_weights() -> None:
    same = [_p(a=[0.5, -1.0]) for _ in range(3)]
    for scale in ("none", "median", "mean"):
        result = dynamic_weights(same, COUNTS, gamma=5.0, distance_scale=scale)
        np.testing.assert_allclose(result.weights, example_weights(COUNTS))


def test_outlier_gets_smaller_weight() -> None:
    deltas = [_p(a=[1.0, 1.0]), _p(a=[1.1, 0.9]), _p(a=[0.9, 1.0]), _p(a=[9.0, -9.0])]
    result = dynamic_weights(deltas, [10] * 4, gamma=1.0, distance_scale="median")
    assert np.argmin(result.weights) == 3
    assert result.weights[3] < 0.25 < result.weights[0]


def test_quality_factor_favours_lower_loss() -> None:
    same = [_p(a=[1.0]) for _ in range(2)]
    result = dynamic_weights(same, [1, 1], gamma=1.0, quality_beta=1.0, losses=[0, 1])
    # w ∝ exp(−β ℓ): (1, e^−1)
    e = math.exp(-1.0)
    np.testing.assert_allclose(result.weights, [1 / (1 + e), e / (1 + e)])
    with pytest.raises(ValueError, match="validation loss"):
        dynamic_weights(same, [1, 1], gamma=1.0, quality_beta=1.0)
    with pytest.raises(ValueError, match="finite validation losses"):
        dynamic_weights(same, [1, 1], 1.0, quality_beta=1.0, losses=[1.0, math.nan])
    # beta = 0 ignores the losses entirely
    off = dynamic_weights(same, [1, 1], gamma=1.0, quality_beta=0.0, losses=[0, 9])
    np.testing.assert_allclose(off.weights, [0.5, 0.5])


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="gamma"):
        dynamic_weights(DELTAS, COUNTS, gamma=-1.0)
    with pytest.raises(ValueError, match="distance_scale"):
        dynamic_weights(DELTAS, COUNTS, gamma=1.0, distance_scale="max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="expected 3 example counts"):
        dynamic_weights(DELTAS, [1, 2], gamma=1.0)
    with pytest.raises(ValueError, match="zero updates"):
        dynamic_weights([], [], gamma=1.0)


_finite32 = st.floats(-1e3, 1e3, width=32)
_BIG = float(np.float32(3e38))  # near float32's max (3.4e38)


@st.composite
def _clients(
    draw: st.DrawFn, elements: st.SearchStrategy[float] = _finite32
) -> tuple[list[Params], list[int]]:
    k = draw(st.integers(1, 6))
    arrays = draw(
        st.lists(
            hnp.arrays(np.float32, (4,), elements=elements), min_size=k, max_size=k
        )
    )
    counts = draw(st.lists(st.integers(1, 1000), min_size=k, max_size=k))
    return [{"w": a[:3], "b": a[3:]} for a in arrays], counts


@settings(max_examples=60, deadline=None)
@given(
    clients=_clients(),
    gamma=st.floats(0, 10),
    scale=st.sampled_from(["none", "median", "mean"]),
    data=st.data(),
)
def test_permutation_invariance_and_sum_to_one(
    clients: tuple[list[Params], list[int]],
    gamma: float,
    scale: DistanceScale,
    data: st.DataObject,
) -> None:
    deltas, counts = clients
    perm = data.draw(st.permutations(range(len(deltas))))
    base = dynamic_weights(deltas, counts, gamma, scale)
    permuted = dynamic_weights(
        [deltas[i] for i in perm],
        [counts[i] for i in perm],
        gamma,
        scale,
    )
    assert math.isclose(float(base.weights.sum()), 1.0, rel_tol=1e-12)
    assert np.all(base.weights >= 0)
    np.testing.assert_allclose(permuted.weights, base.weights[list(perm)], atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(
    clients=_clients(st.floats(-_BIG, _BIG, width=32)),
    gamma=st.floats(0, 1e6),
)
def test_huge_distances_give_no_nan(
    clients: tuple[list[Params], list[int]], gamma: float
) -> None:
    deltas, counts = clients
    result = dynamic_weights(deltas, counts, gamma, distance_scale="none")
    assert np.all(np.isfinite(result.weights))
    assert math.isclose(float(result.weights.sum()), 1.0, rel_tol=1e-12)
