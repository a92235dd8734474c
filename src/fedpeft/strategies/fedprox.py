"""FedProx: FedAvg on the server, a proximal term on the clients.

Li et al. 2020, "Federated Optimization in Heterogeneous Networks" (MLSys), eq. (2):
each client minimises ``F_k(w) + (μ/2) ‖w − w^t‖²`` (a SQUARED norm, gradient
``μ (w − w^t)``). The server aggregates exactly like FedAvg; this strategy only
tells clients the value of μ through :meth:`FedProx.client_config`.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field

from fedpeft.strategies.base import register_strategy
from fedpeft.strategies.config import StrategyOptions
from fedpeft.strategies.fedavg import FedAvg


class FedProxOptions(StrategyOptions):
    """FedProx's options: the clients' proximal weight μ."""

    name: Literal["fedprox"] = "fedprox"
    proximal_mu: float = Field(
        0.01, ge=0.0, allow_inf_nan=False, description="FedProx μ"
    )


@register_strategy("fedprox", FedProxOptions)
class FedProx(FedAvg):
    """FedAvg plus a proximal term μ/2‖w − w^t‖² on clients (Li et al. 2020).

    Args:
        proximal_mu: μ ≥ 0 of the clients' proximal term; 0 is plain FedAvg.

    Raises:
        ValueError: if ``proximal_mu`` is negative or not finite.
    """

    name = "fedprox"
    dp_refusal = "it aggregates like FedAvg (example-weighted mean)"

    def __init__(self, proximal_mu: float = 0.01) -> None:
        if not (math.isfinite(proximal_mu) and proximal_mu >= 0):
            raise ValueError(
                f"proximal_mu must be a finite number >= 0, got {proximal_mu!r}"
            )
        self.proximal_mu = float(proximal_mu)

    def client_config(self, server_round: int) -> dict[str, float]:
        """``{"proximal_mu": μ}`` for the clients' local objective."""
        return {"proximal_mu": self.proximal_mu}
