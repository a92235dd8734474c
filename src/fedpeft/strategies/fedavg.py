"""FedAvg: the example-weighted mean of client deltas.

McMahan et al. 2017, "Communication-Efficient Learning of Deep Networks from
Decentralized Data", Algorithm 1: ``P ← P + Σ_k (n_k/n) ΔP_k``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from fedpeft.aggregation import add_params, example_weights, weighted_mean
from fedpeft.strategies.base import (
    DpRole,
    RoundStats,
    SumFn,
    check_empty_state,
    register_strategy,
    validate_updates,
    weight_metrics,
)
from fedpeft.strategies.config import StrategyOptions
from fedpeft.types import ClientUpdate, Float64Array, Params


class FedAvgOptions(StrategyOptions):
    """FedAvg has no options beyond the common ones."""

    name: Literal["fedavg"] = "fedavg"


@register_strategy("fedavg", FedAvgOptions)
class FedAvg:
    """Example-weighted mean of client deltas (McMahan et al. 2017, Alg. 1)."""

    name = "fedavg"
    needs_mean = False
    dp_role: DpRole | None = None
    dp_refusal = (
        "its weights n_k / Σn are example counts: data-dependent and unbounded, "
        "so one client can move the mean by more than C / m"
    )

    def client_config(self, server_round: int) -> dict[str, float]:
        """No extra local-training settings."""
        return {}

    def weights(self, updates: Sequence[ClientUpdate]) -> Float64Array:
        """Aggregation weights ``n_k / Σn``; subclasses override this only."""
        return example_weights([u.num_examples for u in updates])

    def round_stats(
        self, updates: Sequence[ClientUpdate], total_examples: int, secure_sum: SumFn
    ) -> RoundStats:
        """Only the public total Σn: the weights need nothing secret."""
        return RoundStats(total_examples)

    def client_weight(self, update: ClientUpdate, stats: RoundStats) -> float:
        """``n_k / n_total``: in [0, 1], inside the secure quantizer's range."""
        return update.num_examples / stats.total_examples

    def check_secure(self) -> None:
        """Its weights need nothing but public counts: always computable."""

    def step(
        self, server_round: int, global_params: Params, mean_delta: Params
    ) -> tuple[Params, dict[str, float]]:
        """``P + mean ΔP`` (no server optimizer)."""
        return add_params(global_params, mean_delta), {}

    def aggregate(
        self,
        server_round: int,
        global_params: Params,
        updates: Sequence[ClientUpdate],
    ) -> tuple[Params, dict[str, float]]:
        """:meth:`step` by ``Σ_k w_k ΔP_k`` with :meth:`weights`; inputs are not
        mutated.

        Raises:
            ValueError: see :func:`fedpeft.strategies.base.validate_updates`.
        """
        validate_updates(server_round, global_params, updates)
        w = self.weights(updates)
        mean = weighted_mean([u.delta for u in updates], w)
        new, metrics = self.step(server_round, global_params, mean)
        applied = {k: new[k] - global_params[k] for k in global_params}
        return new, {**weight_metrics(w, applied), **metrics}

    def state_dict(self) -> dict[str, np.ndarray[Any, Any]]:
        """Stateless: ``{}``."""
        return {}

    def load_state_dict(self, state: Mapping[str, np.ndarray[Any, Any]]) -> None:
        """Accept only the empty state."""
        check_empty_state(self.name, state)
