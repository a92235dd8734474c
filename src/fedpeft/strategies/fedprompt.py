"""FedPrompt: the uniform mean of client prompt deltas.

Zhao et al. 2022, "Reduce Communication Costs and Preserve Privacy: Prompt Tuning
Method in Federated Learning" (FedPrompt): every participating client's soft
prompt counts equally, ``P ← P + (1/K) Σ_k ΔP_k``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from fedpeft.aggregation import uniform_weights
from fedpeft.strategies.base import DpRole, RoundStats, register_strategy
from fedpeft.strategies.config import StrategyOptions
from fedpeft.strategies.fedavg import FedAvg
from fedpeft.types import ClientUpdate, Float64Array


class FedPromptOptions(StrategyOptions):
    """FedPrompt has no options beyond the common ones."""

    name: Literal["fedprompt"] = "fedprompt"


@register_strategy("fedprompt", FedPromptOptions)
class FedPrompt(FedAvg):
    """Uniform mean of client deltas (FedPrompt, Zhao et al. 2022)."""

    name = "fedprompt"
    dp_role: DpRole | None = "uniform_mean"
    dp_refusal = ""

    def weights(self, updates: Sequence[ClientUpdate]) -> Float64Array:
        """Equal weights ``1/K``, whatever the clients' example counts."""
        return uniform_weights(len(updates))

    def client_weight(self, update: ClientUpdate, stats: RoundStats) -> float:
        """1 for every client."""
        return 1.0
