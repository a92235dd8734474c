"""Adaptive clipping (Andrew et al. 2021): the noise split, the clip step, and
a run whose ε is dp-accounting's for the run's sampling."""

from __future__ import annotations

import math
from pathlib import Path

import dp_accounting
import numpy as np
import pytest
from dp_accounting.rdp import RdpAccountant

from fedpeft.config import ConfigError
from fedpeft.engine.simulation import FederatedRun
from fedpeft.experiment import build_experiment
from fedpeft.privacy.adaptive_clip import AdaptiveClip, update_noise_multiplier
from tests.conftest import tiny_config


@pytest.mark.parametrize(("sigma", "count_std"), [(1.0, 5.0), (0.7, 0.36), (2.0, 50)])
def test_update_and_count_noise_are_worth_sigma(sigma: float, count_std: float) -> None:
    upd = update_noise_multiplier(sigma, count_std)
    assert upd > sigma
    assert (upd**-2 + (2 * count_std) ** -2) ** -0.5 == pytest.approx(sigma)


def test_count_noise_below_half_sigma_is_refused() -> None:
    with pytest.raises(ValueError, match="count_noise"):
        update_noise_multiplier(1.0, 0.5)


def test_clip_steps_geometrically_towards_the_quantile() -> None:
    a = AdaptiveClip(quantile=0.5, lr=0.2, count_std=1e-12, update_multiplier=1.0)
    rng = np.random.default_rng(0)
    up, frac = a.next_clip(1.0, unclipped=10, expected_clients=10, rng=rng)
    assert frac == pytest.approx(1.0)  # every update fits: C shrinks
    assert up == pytest.approx(math.exp(-0.2 * 0.5))
    down, _ = a.next_clip(1.0, unclipped=0, expected_clients=10, rng=rng)
    assert down == pytest.approx(math.exp(0.2 * 0.5))


ADAPTIVE = (
    "peft.head_init=zeros",
    "strategy.name=fedprompt",
    "federation.sampling=poisson",
    "strategy.fraction_fit=0.5",
    "federation.rounds=3",
    "privacy.client_dp={noise_multiplier=1.1, clip_norm=0.5, target_quantile=0.5, "
    "count_noise=1.0}",
)


@pytest.mark.slow
def test_run_with_adaptive_clipping(tmp_path: Path) -> None:
    """C moves every round, ε is dp-accounting's Poisson-subsampled Gaussian
    with the run's σ (not σ_Δ), and a resumed run restores C."""
    cfg = tiny_config(tmp_path, *ADAPTIVE)
    run = FederatedRun(build_experiment(cfg), run_dir=tmp_path / "run")
    result = run.run()
    rounds = result.history[1:]
    clips = [r["clip_norm"] for r in rounds]
    assert clips[0] == 0.5 and len(set(clips)) == len(clips)
    assert rounds[0]["update_noise_multiplier"] == pytest.approx(
        update_noise_multiplier(1.1, 1.0)
    )
    oracle = RdpAccountant()
    event = dp_accounting.PoissonSampledDpEvent(0.5, dp_accounting.GaussianDpEvent(1.1))
    for record in rounds:
        oracle.compose(event)
        assert record["epsilon"] == pytest.approx(oracle.get_epsilon(1e-3), rel=1e-9)

    again = FederatedRun(build_experiment(cfg), run_dir=tmp_path / "run2")
    again.loop.settings = type(again.loop.settings)(
        **{**again.loop.settings.__dict__, "rounds": 2}
    )
    again.run()
    resumed = FederatedRun(build_experiment(cfg), run_dir=tmp_path / "run2").run(
        resume=True
    )
    assert resumed.history[-1]["clip_norm"] == pytest.approx(clips[-1])
    for key, value in result.params.items():
        np.testing.assert_allclose(resumed.params[key], value, atol=1e-6)


def test_adaptive_clipping_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="mode = 'central'"):
        tiny_config(
            tmp_path,
            "privacy.secagg=true",
            "privacy.client_dp={noise_multiplier=1.0, target_quantile=0.5, "
            "mode='distributed'}",
        )
    cfg = tiny_config(
        tmp_path,
        "peft.head_init=zeros",
        "privacy.client_dp={noise_multiplier=4.0, target_quantile=0.5}",
    )
    with pytest.raises(ConfigError, match="count_noise"):
        FederatedRun(build_experiment(cfg))
