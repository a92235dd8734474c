"""Tests for fedpeft.privacy.noise: seeded and secure Gaussian noise."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from fedpeft.aggregation import flatten
from fedpeft.privacy import (
    distributed_noise_std,
    effective_noise_multiplier,
    gaussian_noise_like,
    secure_standard_normal,
)

LIKE = {"w": np.zeros((300, 200), np.float32), "b": np.zeros(1000, np.float32)}


def test_seeded_noise_is_reproducible_and_shaped() -> None:
    one = gaussian_noise_like(LIKE, 0.5, np.random.default_rng(7))
    two = gaussian_noise_like(LIKE, 0.5, np.random.default_rng(7))
    other = gaussian_noise_like(LIKE, 0.5, np.random.default_rng(8))
    for name, arr in LIKE.items():
        assert one[name].shape == arr.shape and one[name].dtype == np.float64
        np.testing.assert_array_equal(one[name], two[name])
    assert not np.array_equal(one["w"], other["w"])


def test_noise_does_not_depend_on_key_order() -> None:
    reordered = {"b": LIKE["b"], "w": LIKE["w"]}
    one = gaussian_noise_like(LIKE, 1.0, np.random.default_rng(3))
    two = gaussian_noise_like(reordered, 1.0, np.random.default_rng(3))
    np.testing.assert_array_equal(one["w"], two["w"])


def test_seeded_noise_has_sigma_c_std() -> None:
    sigma, clip = 1.3, 0.7
    flat = flatten(gaussian_noise_like(LIKE, sigma * clip, np.random.default_rng(0)))
    # 61,000 draws: the sample std is within ~0.3% (1 s.e.) of the truth
    assert flat.std() == pytest.approx(sigma * clip, rel=0.015)
    assert abs(flat.mean()) < 5 * sigma * clip / math.sqrt(flat.size)


def test_secure_noise_differs_per_call_and_has_right_std() -> None:
    one = flatten(gaussian_noise_like(LIKE, 2.0, None, secure=True))
    two = flatten(gaussian_noise_like(LIKE, 2.0, None, secure=True))
    assert not np.array_equal(one, two)
    assert one.std() == pytest.approx(2.0, rel=0.015)
    assert abs(one.mean()) < 5 * 2.0 / math.sqrt(one.size)


def test_secure_standard_normal_is_normal() -> None:
    draws = secure_standard_normal(20_001)  # odd size: Box–Muller pairs trimmed
    assert draws.shape == (20_001,) and np.all(np.isfinite(draws))
    assert stats.kstest(draws, "norm").pvalue > 1e-6
    assert secure_standard_normal(0).shape == (0,)


def test_zero_std_gives_zeros_without_drawing() -> None:
    rng = np.random.default_rng(1)
    out = gaussian_noise_like(LIKE, 0.0, rng)
    assert all(not a.any() for a in out.values())
    assert rng.random() == np.random.default_rng(1).random()


def test_randomness_source_must_be_explicit() -> None:
    with pytest.raises(ValueError, match="explicit"):
        gaussian_noise_like(LIKE, 1.0, None)
    with pytest.raises(ValueError, match="rng=None"):
        gaussian_noise_like(LIKE, 1.0, np.random.default_rng(0), secure=True)
    with pytest.raises(ValueError, match="std"):
        gaussian_noise_like(LIKE, -1.0, np.random.default_rng(0))


def test_distributed_shares_sum_to_central_noise() -> None:
    sigma, clip, m = 1.1, 0.5, 16
    std = distributed_noise_std(sigma, clip, m)
    assert std == pytest.approx(sigma * clip / 4)
    rng = np.random.default_rng(5)
    shares = [flatten(gaussian_noise_like(LIKE, std, rng)) for _ in range(m)]
    total = np.sum(shares, axis=0)
    assert total.std() == pytest.approx(sigma * clip, rel=0.015)


def test_effective_multiplier_after_dropouts() -> None:
    assert effective_noise_multiplier(2.0, 16, 4) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="contributing_clients"):
        effective_noise_multiplier(1.0, 4, 5)
