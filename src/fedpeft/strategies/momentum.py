"""Server momentum (FedAvgM: Hsu et al. 2019, "Measuring the Effects of
Non-Identical Data Distribution for Federated Visual Classification").

The server keeps a velocity ``v`` and steps by it instead of by the round's
mean update::

    v ← β·v + Δ̄_t        P ← P + v

so a round whose few sampled clients all pull one way moves the model by a
fraction of what the previous rounds agreed on, not by its own mean alone. It
wraps any strategy whose step is "add the mean" (FedAvg, FedPrompt, FedProx,
Dynamic): the strategy still decides the weights and, with them, Δ̄_t, computed
in the clear, through secure aggregation or with DP noise (momentum is
post-processing of the released mean). FedAdam and FedYogi keep their own
first moment and refuse it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from fedpeft.aggregation import global_norm
from fedpeft.types import ClientUpdate, Float64Array, Params

if TYPE_CHECKING:
    from fedpeft.strategies.base import DpRole, RoundStats, Strategy, SumFn

VELOCITY = "momentum/"
"""Key prefix of the velocity in the strategy's checkpointed state."""


class ServerMomentum:
    """``strategy`` with FedAvgM's server momentum β (module docstring).

    Raises:
        ValueError: if β is outside [0, 1) or ``strategy`` has its own server
            optimizer.
    """

    def __init__(self, strategy: Strategy, beta: float) -> None:
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"strategy.server_momentum={beta} must be in [0, 1)")
        if strategy.dp_role == "server_optimizer":
            raise ValueError(
                f"strategy {strategy.name!r} is a server optimizer with its own "
                "first moment; set strategy.server_momentum = 0 or use fedavg, "
                "fedprompt, fedprox or dynamic"
            )
        self.inner, self.beta = strategy, beta
        self.velocity: Params = {}
        self.name = f"{strategy.name}+momentum"
        self.needs_mean = strategy.needs_mean
        self.dp_role: DpRole | None = strategy.dp_role
        self.dp_refusal = strategy.dp_refusal

    def client_config(self, server_round: int) -> dict[str, float]:
        return self.inner.client_config(server_round)

    def weights(self, updates: Sequence[ClientUpdate]) -> Float64Array:
        return self.inner.weights(updates)

    def round_stats(
        self, updates: Sequence[ClientUpdate], total_examples: int, secure_sum: SumFn
    ) -> RoundStats:
        return self.inner.round_stats(updates, total_examples, secure_sum)

    def client_weight(self, update: ClientUpdate, stats: RoundStats) -> float:
        return self.inner.client_weight(update, stats)

    def check_secure(self) -> None:
        self.inner.check_secure()

    def step(
        self, server_round: int, global_params: Params, mean_delta: Params
    ) -> tuple[Params, dict[str, float]]:
        """``v ← β v + Δ̄``; the wrapped strategy steps by ``v``."""
        velocity = {
            k: (self.beta * self.velocity[k] + d if k in self.velocity else d).astype(
                np.float32
            )
            for k, d in mean_delta.items()
        }
        self.velocity = velocity
        new, metrics = self.inner.step(server_round, global_params, velocity)
        return new, {**metrics, "momentum_norm": global_norm(velocity)}

    def aggregate(
        self,
        server_round: int,
        global_params: Params,
        updates: Sequence[ClientUpdate],
    ) -> tuple[Params, dict[str, float]]:
        """The wrapped strategy's mean (its weights, checks and metrics), then
        the momentum step."""
        moved, metrics = self.inner.aggregate(server_round, global_params, updates)
        mean = {k: moved[k] - global_params[k] for k in global_params}
        new, extra = self.step(server_round, global_params, mean)
        return new, {**metrics, **extra}

    def state_dict(self) -> dict[str, np.ndarray[Any, Any]]:
        return {
            **self.inner.state_dict(),
            **{VELOCITY + k: v for k, v in self.velocity.items()},
        }

    def load_state_dict(self, state: Mapping[str, np.ndarray[Any, Any]]) -> None:
        self.velocity = {
            k[len(VELOCITY) :]: np.asarray(v, np.float32)
            for k, v in state.items()
            if k.startswith(VELOCITY)
        }
        self.inner.load_state_dict(
            {k: v for k, v in state.items() if not k.startswith(VELOCITY)}
        )
