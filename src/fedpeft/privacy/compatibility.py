"""Which aggregation strategies keep the sensitivity client-level DP assumes.

The accounting in :mod:`fedpeft.privacy.accounting` is for DP-FedAvg (McMahan et
al. 2018, Algorithm 1): C-clipped updates summed with EQUAL weights, noised, and
divided by a public denominator. Then one client moves the released sum by at
most C (add/remove) or 2C (replace). A strategy is compatible only if the
released quantity is that DP mean, or post-processing of it:

* example-weighted means (FedAvg, FedProx: ``n_k / Σ n``) have data-dependent
  weights; one client with a large n_k dominates the mean, and n_k itself is
  private. (McMahan et al. 2018 allow capped weights w_k ≤ 1 with a fixed
  denominator; that is not what these strategies compute.)
* update-dependent weights (Dynamic: ``exp(−γ‖ΔP_k − mean‖)``) depend on every
  client's update, so one client changes all the weights: no bound by C.
* server optimizers (FedAdam/FedYogi, Reddi et al. 2021) are post-processing and
  keep the guarantee IF their pseudo-gradient is the DP mean; the engine must feed
  them the noised mean, not the per-client updates (their own mean is
  example-weighted).

The table below is explicit: a new strategy is refused until someone adds a row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["uniform_mean", "server_optimizer"]


@dataclass(frozen=True)
class DpStrategyRule:
    """How a strategy may be run under client-level DP.

    Attributes:
        name: Registered strategy name.
        role: ``"uniform_mean"`` (its aggregate IS the equal-weight mean: replace
            it by the DP mean) or ``"server_optimizer"`` (it must consume the DP
            mean as its pseudo-gradient).
    """

    name: str
    role: Role


ALLOWED: dict[str, DpStrategyRule] = {
    "fedprompt": DpStrategyRule("fedprompt", "uniform_mean"),
    "fedadam": DpStrategyRule("fedadam", "server_optimizer"),
    "fedyogi": DpStrategyRule("fedyogi", "server_optimizer"),
}
"""Strategies compatible with client-level DP, and how."""

REFUSED: dict[str, str] = {
    "fedavg": "its weights n_k / Σn are example counts: data-dependent and "
    "unbounded, so one client can move the mean by more than C / m",
    "fedprox": "it aggregates like FedAvg (example-weighted mean)",
    "dynamic": "its weights depend on every client's update, so one client "
    "changes all weights and the sensitivity is not bounded by C",
}
"""Known strategies that break the DP-FedAvg sensitivity, with the reason."""


def _allowed_text() -> str:
    return (
        "allowed with client-level DP: 'fedprompt' (uniform mean), or 'fedadam' / "
        "'fedyogi' as server optimizers fed the DP mean"
    )


def check_strategy_compatible(strategy_name: str) -> DpStrategyRule:
    """Return how ``strategy_name`` may run under client-level DP, or refuse it.

    Record-level DP (DP-SGD inside clients) puts no constraint on the strategy.

    Raises:
        ValueError: for a strategy in :data:`REFUSED` (the message says why and
            which strategies are allowed) or one not in the table.
    """
    if strategy_name in ALLOWED:
        return ALLOWED[strategy_name]
    if strategy_name in REFUSED:
        reason = REFUSED[strategy_name]
        raise ValueError(
            f"strategy {strategy_name!r} cannot be used with client-level DP: "
            f"{reason}. {_allowed_text()}"
        )
    raise ValueError(
        f"strategy {strategy_name!r} has no client-level DP rule; {_allowed_text()}"
    )
