"""Tests for fedpeft.privacy.calibration: calibrated σ never overshoots ε."""

from __future__ import annotations

import pytest

from fedpeft.privacy import (
    calibrate_noise_multiplier,
    calibrate_record_noise_multiplier,
    epsilon_after,
    record_level_epsilon,
)

DELTA = 1e-5


@pytest.mark.parametrize("target", [0.5, 1.0, 2.0, 4.0, 8.0])
def test_poisson_calibration_never_overshoots_and_is_tight(target: float) -> None:
    sigma = calibrate_noise_multiplier(target, DELTA, 100, "poisson", sample_rate=0.05)
    assert epsilon_after(100, sigma, DELTA, "poisson", sample_rate=0.05) <= target
    assert epsilon_after(100, 0.98 * sigma, DELTA, "poisson", sample_rate=0.05) > target


@pytest.mark.parametrize("target", [1.0, 4.0])
def test_fixed_size_calibration_never_overshoots_and_is_tight(target: float) -> None:
    def eps(sigma: float) -> float:
        return epsilon_after(
            20, sigma, DELTA, "fixed", num_clients=100, clients_per_round=10
        )

    sigma = calibrate_noise_multiplier(
        target, DELTA, 20, "fixed", num_clients=100, clients_per_round=10
    )
    assert eps(sigma) <= target
    assert eps(0.98 * sigma) > target


def test_pld_calibration_never_overshoots() -> None:
    # building a subsampled PLD is slow: q = 1 and a coarse tol keep this short
    def eps(sigma: float) -> float:
        return epsilon_after(
            3, sigma, DELTA, "poisson", sample_rate=1.0, accountant="pld"
        )

    sigma = calibrate_noise_multiplier(
        2.0, DELTA, 3, "poisson", sample_rate=1.0, accountant="pld", tol=1e-2
    )
    assert eps(sigma) <= 2.0
    assert eps(0.98 * sigma) > 2.0


def test_record_level_calibration_never_overshoots() -> None:
    sigma = calibrate_record_noise_multiplier(3.0, DELTA, 0.02, 500)
    assert record_level_epsilon(sigma, 0.02, 500, DELTA) <= 3.0
    assert record_level_epsilon(0.98 * sigma, 0.02, 500, DELTA) > 3.0


def test_invalid_target_refused() -> None:
    with pytest.raises(ValueError, match="target_epsilon"):
        calibrate_noise_multiplier(0.0, DELTA, 10, "poisson", sample_rate=0.1)
