"""The server algorithm of a federation whose clients all train one adapter layout."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedpeft.messages import Instruction, Task
from fedpeft.server.aggregators import Aggregator, Metrics
from fedpeft.server.warm_start import (
    merge_calibration,
    merge_class_stats,
    merge_probe_heads,
    stats_config,
)
from fedpeft.strategies import Strategy
from fedpeft.types import ClientUpdate, Params

AGG = "aggregator."
"""Prefix of the aggregator's entries in the server's checkpointed state."""


@dataclass
class UniformServer:
    """Every selected client is sent the global state and returns ΔP; the
    strategy merges the deltas through the aggregator (plain, secure or DP).

    Attributes:
        strategy: Client weights and the server step.
        aggregator: How the weighted mean is computed.
        num_clients: N; every client is eligible.
        total_examples: Σ n_k (public; scales the warm start's statistics).
    """

    strategy: Strategy
    aggregator: Aggregator
    num_clients: int
    total_examples: int = 1

    @property
    def eligible(self) -> list[int]:
        return list(range(self.num_clients))

    def instructions(
        self, rnd: int, task: Task, params: Params, selected: Sequence[int]
    ) -> list[Instruction]:
        config: dict[str, float] = {}
        if task == "fit":
            config = self.strategy.client_config(rnd)
        elif task in ("class-stats", "calibrate"):
            config = stats_config(self.total_examples)
        return [Instruction(k, rnd, task, params, config) for k in selected]

    def merge(
        self, rnd: int, params: Params, updates: Sequence[ClientUpdate]
    ) -> tuple[Params, Metrics]:
        """The strategy's step by the round's (plain, secure or DP) mean."""
        if not updates and not self.aggregator.releases_when_empty:
            return params, {}
        return self.aggregator.merge(rnd, params, updates, self.strategy)

    def merge_warm_start(
        self, task: Task, params: Params, replies: Sequence[ClientUpdate]
    ) -> tuple[Params, Metrics]:
        """Round 0: the probe heads' mean, or the class-means head
        (:mod:`fedpeft.server.warm_start`)."""
        if task == "class-stats":
            return merge_class_stats(self.aggregator, params, replies)
        if task == "calibrate":
            return merge_calibration(self.aggregator, params, replies)
        return merge_probe_heads(self.aggregator, params, replies)

    def eval_state(self, params: Params) -> tuple[Params, None]:
        """The state to evaluate and the adapter shape it has (the run's)."""
        return params, None

    def state_dict(self) -> dict[str, np.ndarray[Any, Any]]:
        own = self.aggregator.state_dict()
        return {**self.strategy.state_dict(), **{AGG + k: v for k, v in own.items()}}

    def load_state_dict(self, state: Mapping[str, np.ndarray[Any, Any]]) -> None:
        self.strategy.load_state_dict(
            {k: v for k, v in state.items() if not k.startswith(AGG)}
        )
        self.aggregator.load_state_dict(
            {k[len(AGG) :]: v for k, v in state.items() if k.startswith(AGG)}
        )
