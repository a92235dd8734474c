"""The server algorithm of a federation whose clients all train one adapter layout."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedpeft.messages import Instruction, Task
from fedpeft.server.aggregators import Aggregator, Metrics
from fedpeft.strategies import Strategy
from fedpeft.types import ClientUpdate, Params


@dataclass
class UniformServer:
    """Every selected client is sent the global state and returns ΔP; the
    strategy merges the deltas through the aggregator (plain, secure or DP).

    Attributes:
        strategy: Client weights and the server step.
        aggregator: How the weighted mean is computed.
        num_clients: N; every client is eligible.
    """

    strategy: Strategy
    aggregator: Aggregator
    num_clients: int

    @property
    def eligible(self) -> list[int]:
        return list(range(self.num_clients))

    def instructions(
        self, rnd: int, task: Task, params: Params, selected: Sequence[int]
    ) -> list[Instruction]:
        config = self.strategy.client_config(rnd) if task == "fit" else {}
        return [Instruction(k, rnd, task, params, config) for k in selected]

    def merge(
        self, rnd: int, params: Params, updates: Sequence[ClientUpdate]
    ) -> tuple[Params, Metrics]:
        """The strategy's step by the round's (plain, secure or DP) mean."""
        if not updates and not self.aggregator.releases_when_empty:
            return params, {}
        return self.aggregator.merge(rnd, params, updates, self.strategy)

    def merge_heads(
        self, params: Params, heads: Sequence[ClientUpdate]
    ) -> tuple[Params, Metrics]:
        """The warm start: the n_k-weighted mean of the clients' probe heads."""
        mean, metrics = self.aggregator.weighted_mean(
            0, [h.delta for h in heads], [h.num_examples for h in heads]
        )
        return {**params, **mean}, metrics

    def eval_state(self, params: Params) -> tuple[Params, None]:
        """The state to evaluate and the adapter shape it has (the run's)."""
        return params, None

    def state_dict(self) -> dict[str, np.ndarray[Any, Any]]:
        return self.strategy.state_dict()

    def load_state_dict(self, state: Mapping[str, np.ndarray[Any, Any]]) -> None:
        self.strategy.load_state_dict(state)
