"""FedAvg: the example-weighted mean of client deltas.

McMahan et al. 2017, "Communication-Efficient Learning of Deep Networks from
Decentralized Data", Algorithm 1: ``P ← P + Σ_k (n_k/n) ΔP_k``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fedpeft.aggregation import add_params, example_weights, weighted_mean
from fedpeft.aggregation.mean import Float64Array
from fedpeft.strategies.base import (
    STRATEGIES,
    check_empty_state,
    validate_updates,
    weight_metrics,
)
from fedpeft.types import ClientUpdate, Params


@STRATEGIES.register("fedavg")
class FedAvg:
    """Example-weighted mean of client deltas (McMahan et al. 2017, Alg. 1)."""

    name = "fedavg"

    def client_config(self, server_round: int) -> dict[str, float]:
        """No extra local-training settings."""
        return {}

    def weights(self, updates: Sequence[ClientUpdate]) -> Float64Array:
        """Aggregation weights ``n_k / Σn``; subclasses override this only."""
        return example_weights([u.num_examples for u in updates])

    def aggregate(
        self,
        server_round: int,
        global_params: Params,
        updates: Sequence[ClientUpdate],
    ) -> tuple[Params, dict[str, float]]:
        """``P + Σ_k w_k ΔP_k`` with :meth:`weights`; inputs are not mutated.

        Raises:
            ValueError: see :func:`fedpeft.strategies.base.validate_updates`.
        """
        validate_updates(server_round, global_params, updates)
        w = self.weights(updates)
        step = weighted_mean([u.delta for u in updates], w)
        return add_params(global_params, step), weight_metrics(w, step)

    def state_dict(self) -> dict[str, np.ndarray[Any, Any]]:
        """Stateless: ``{}``."""
        return {}

    def load_state_dict(self, state: Mapping[str, np.ndarray[Any, Any]]) -> None:
        """Accept only the empty state."""
        check_empty_state(self.name, state)
