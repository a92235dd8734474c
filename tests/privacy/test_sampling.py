"""Tests for fedpeft.privacy.sampling: Poisson subsampling."""

from __future__ import annotations

import numpy as np
import pytest

from fedpeft.privacy import poisson_batches, poisson_subsample


def test_poisson_batches_reproducible_with_expected_size() -> None:
    one = list(poisson_batches(1000, 0.05, 200, np.random.default_rng(4)))
    two = list(poisson_batches(1000, 0.05, 200, np.random.default_rng(4)))
    assert len(one) == 200
    assert all(np.array_equal(a, b) for a, b in zip(one, two, strict=True))
    sizes = np.array([len(b) for b in one])
    # E = qn = 50, sd = sqrt(n q (1-q)) ≈ 6.9; the mean of 200 has sd ≈ 0.49
    assert abs(sizes.mean() - 50) < 2.5
    assert all(np.all(np.diff(b) > 0) and b.min(initial=0) >= 0 for b in one)


def test_each_item_kept_with_probability_q() -> None:
    rng = np.random.default_rng(0)
    counts = np.zeros(20)
    for _ in range(4000):
        counts[poisson_subsample(20, 0.3, rng)] += 1
    np.testing.assert_allclose(counts / 4000, 0.3, atol=0.03)


def test_empty_batches_happen_for_small_rates() -> None:
    sizes = [len(b) for b in poisson_batches(10, 0.01, 100, np.random.default_rng(1))]
    assert 0 in sizes


def test_arguments_validated_eagerly() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="q must be"):
        poisson_batches(10, 0.0, 5, rng)
    with pytest.raises(ValueError, match="steps"):
        poisson_batches(10, 0.5, -1, rng)
    with pytest.raises(TypeError, match="Generator"):
        poisson_subsample(10, 0.5, np.random.RandomState(0))  # type: ignore[arg-type]
