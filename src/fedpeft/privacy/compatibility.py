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

Every strategy declares its role (``dp_role``) or the reason it is refused
(``dp_refusal``); a strategy without a role is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

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


class DpDeclaring(Protocol):
    """What a strategy declares about client-level DP (its own class attributes)."""

    name: str
    dp_role: Role | None
    dp_refusal: str


def check_strategy_compatible(strategy: DpDeclaring) -> DpStrategyRule:
    """Return how ``strategy`` may run under client-level DP, or refuse it.

    Each strategy declares its ``dp_role`` (``None`` when the analysis above
    refuses it) and the reason in ``dp_refusal``, so a new strategy states its
    own case. Record-level DP (DP-SGD inside clients) puts no constraint on the
    strategy.

    Raises:
        ValueError: for a strategy whose ``dp_role`` is ``None`` (the message
            says why, and which roles are allowed).
    """
    if strategy.dp_role is not None:
        return DpStrategyRule(strategy.name, strategy.dp_role)
    reason = strategy.dp_refusal or "it declares no client-level DP role"
    raise ValueError(
        f"strategy {strategy.name!r} cannot be used with client-level DP: {reason}. "
        "Allowed: a uniform mean (e.g. 'fedprompt'), or a server optimizer fed "
        "the DP mean (e.g. 'fedadam', 'fedyogi')"
    )
