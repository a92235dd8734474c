"""Client-level DP of a run, resolved from the config: σ (given or calibrated),
the per-round DP event, the accountant and the budget.

DP-FedAvg (McMahan et al. 2018) as the mean of :mod:`fedpeft.server.aggregators`
uses these values; the math lives in :mod:`fedpeft.privacy`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fedpeft.config import ConfigError, RunConfig
from fedpeft.privacy import (
    PrivacyAccountant,
    PrivacyBudget,
    client_level_event,
    expected_clients,
)
from fedpeft.privacy.accounting import DpEvent, Sampling
from fedpeft.privacy.adaptive_clip import AdaptiveClip, update_noise_multiplier
from fedpeft.privacy.calibration import calibrate_noise_multiplier
from fedpeft.strategies.sampling import sample_size


@dataclass
class ClientDP:
    """Resolved client-level DP for a run: σ, the per-round event, the accountant."""

    clip_norm: float
    noise_multiplier: float
    mode: str
    expected_clients: float
    event: DpEvent
    accountant: PrivacyAccountant
    budget: PrivacyBudget | None
    delta: float
    adaptive: AdaptiveClip | None = None
    """Adaptive clipping (then ``clip_norm`` is the initial C)."""

    def would_exceed(self) -> bool:
        return self.budget is not None and self.accountant.would_exceed(
            self.budget, self.event
        )


def client_dp_plan(cfg: RunConfig) -> ClientDP | None:
    """The run's client-level DP, or ``None`` without ``privacy.client_dp``.

    Raises:
        ConfigError: when neither σ nor a target ε is given.
    """
    c = cfg.privacy.client_dp
    if c is None:
        return None
    fed, strat = cfg.federation, cfg.strategy
    sampling: Sampling = fed.sampling
    m = sample_size(fed.num_clients, strat.fraction_fit, strat.min_fit_clients)
    kwargs: dict[str, Any] = (
        {"sample_rate": strat.fraction_fit}
        if sampling == "poisson"
        else {"num_clients": fed.num_clients, "clients_per_round": m}
    )
    if c.noise_multiplier is not None:
        sigma = c.noise_multiplier
    elif c.target_epsilon is not None:
        sigma = calibrate_noise_multiplier(
            c.target_epsilon,
            c.delta,
            max(fed.rounds, 1),
            sampling,
            accountant=c.accountant,
            **kwargs,
        )
    else:
        raise ConfigError(
            "privacy.client_dp needs noise_multiplier or target_epsilon "
            "(e.g. --set 'privacy.client_dp={target_epsilon=8.0}')"
        )
    event = client_level_event(sigma, sampling, **kwargs)
    denom = expected_clients(
        sampling,
        num_clients=fed.num_clients,
        clients_per_round=m,
        sample_rate=strat.fraction_fit,
    )
    budget = (
        PrivacyBudget(c.target_epsilon, c.delta)
        if c.target_epsilon is not None
        else None
    )
    adaptive = None
    if c.target_quantile is not None:
        count_std = c.count_noise if c.count_noise is not None else denom / 20
        try:
            update_sigma = update_noise_multiplier(sigma, count_std)
        except ValueError as err:
            raise ConfigError(f"privacy.client_dp: {err}") from None
        adaptive = AdaptiveClip(
            c.target_quantile, c.quantile_lr, count_std, update_sigma
        )
    return ClientDP(
        c.clip_norm,
        sigma,
        c.mode,
        denom,
        event,
        PrivacyAccountant(c.accountant, c.delta),
        budget,
        c.delta,
        adaptive,
    )
