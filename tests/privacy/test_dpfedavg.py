"""Tests for fedpeft.privacy.dpfedavg: the central and distributed DP mean."""

from __future__ import annotations

import numpy as np
import pytest

from fedpeft.aggregation import flatten, global_norm
from fedpeft.privacy import (
    distributed_noise_std,
    dp_mean,
    expected_clients,
    mean_from_noisy_sum,
    privatize_update,
)
from fedpeft.types import Params


def _p(a: list[float], b: list[float]) -> Params:
    return {"a": np.asarray(a, np.float32), "b": np.asarray(b, np.float32)}


LIKE = _p([0.0, 0.0], [0.0])


def test_noiseless_dp_mean_is_clipped_sum_over_expected_clients() -> None:
    # norms: 5 (clipped to 1 -> [0.6, 0.8, 0]) and 0.5 (kept); expected m̄ = 4
    deltas = [_p([3.0, 4.0], [0.0]), _p([0.0, 0.3], [0.4])]
    mean, stats = dp_mean(
        LIKE,
        deltas,
        clip_norm=1.0,
        noise_multiplier=0.0,
        expected_clients=4.0,
        rng=np.random.default_rng(0),
    )
    np.testing.assert_allclose(mean["a"], [0.6 / 4, 1.1 / 4], rtol=1e-6)
    np.testing.assert_allclose(mean["b"], [0.4 / 4], rtol=1e-6)
    assert stats.clipped_fraction == 0.5 and stats.num_updates == 2
    assert stats.mean_update_norm == pytest.approx(2.75)


def test_dp_mean_noise_has_sigma_c_over_m_std() -> None:
    like = {"w": np.zeros(50_000, np.float32)}
    mean, stats = dp_mean(
        like,
        [],
        clip_norm=0.5,
        noise_multiplier=2.0,
        expected_clients=10.0,
        rng=np.random.default_rng(1),
    )  # no client sampled: the round still releases pure noise
    assert flatten(mean).std() == pytest.approx(2.0 * 0.5 / 10, rel=0.02)
    assert stats.noise_std == pytest.approx(0.1)


def test_dp_mean_reproducible_and_inputs_untouched() -> None:
    deltas = [_p([3.0, 4.0], [1.0])]
    before = deltas[0]["a"].copy()
    kwargs = {"clip_norm": 1.0, "noise_multiplier": 1.0, "expected_clients": 2.0}
    one, _ = dp_mean(LIKE, deltas, rng=np.random.default_rng(3), **kwargs)  # type: ignore[arg-type]
    two, _ = dp_mean(LIKE, deltas, rng=np.random.default_rng(3), **kwargs)  # type: ignore[arg-type]
    np.testing.assert_array_equal(one["a"], two["a"])
    np.testing.assert_array_equal(deltas[0]["a"], before)


def test_dp_mean_refuses_mismatched_update() -> None:
    with pytest.raises(ValueError, match="update 0"):
        dp_mean(
            LIKE,
            [{"a": np.zeros(2, np.float32)}],
            clip_norm=1.0,
            noise_multiplier=1.0,
            expected_clients=1.0,
            rng=np.random.default_rng(0),
        )


def test_distributed_shares_sum_to_the_central_mechanism() -> None:
    m, sigma, clip = 8, 1.5, 0.2
    like = {"w": np.zeros(20_000, np.float32)}
    rngs = [np.random.default_rng(100 + k) for k in range(m)]
    shares = [
        privatize_update(
            like, clip_norm=clip, noise_multiplier=sigma, num_clients=m, rng=r
        )[0]
        for r in rngs
    ]
    total = {"w": np.sum([s["w"].astype(np.float64) for s in shares], axis=0)}
    mean = mean_from_noisy_sum(total, float(m))
    assert flatten(total).std() == pytest.approx(sigma * clip, rel=0.02)
    assert flatten(mean).std() == pytest.approx(sigma * clip / m, rel=0.02)
    assert distributed_noise_std(sigma, clip, m) == pytest.approx(
        sigma * clip / np.sqrt(m)
    )


def test_privatize_update_clips_before_noising() -> None:
    noised, norm = privatize_update(
        _p([30.0, 40.0], [0.0]),
        clip_norm=1.0,
        noise_multiplier=0.0,
        num_clients=4,
        rng=np.random.default_rng(0),
    )
    assert norm == pytest.approx(50.0)
    assert global_norm(noised) == pytest.approx(1.0, rel=1e-6)


def test_expected_clients() -> None:
    assert expected_clients("poisson", num_clients=200, sample_rate=0.05) == 10.0
    assert expected_clients("fixed", num_clients=200, clients_per_round=7) == 7.0
    with pytest.raises(ValueError, match="sample_rate"):
        expected_clients("poisson", num_clients=200)
