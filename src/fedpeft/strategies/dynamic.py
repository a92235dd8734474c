"""Dynamic (heterogeneity-aware) aggregation — the project's seed rule.

``w_k ∝ (n_k/Σn) · exp(−γ d̃_k) · exp(−β ℓ_k)`` with
``d_k = ‖ΔP_k − mean ΔP‖₂`` (uniform mean of the participating deltas, norm over
all tensors concatenated), then ``P ← P + Σ_k w_k ΔP_k / Σ_k w_k``. The math and
its equations live in :mod:`fedpeft.aggregation.dynamic`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import Field

from fedpeft.aggregation import (
    DISTANCE_SCALES,
    DistanceScale,
    DynamicWeights,
    add_params,
    dynamic_weights,
    flatten,
    weighted_mean,
)
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

COUNT_KEY = "__count__"
"""Extra entry of the first secure pass: each client adds 1 to the count."""

QUALITY_METRIC = "val_loss"
"""Client metric used as ℓ_k by the quality factor."""


class DynamicOptions(StrategyOptions):
    """Dynamic aggregation's options: distance temperature, distance scale and
    quality weight (see :class:`Dynamic`)."""

    name: Literal["dynamic"] = "dynamic"
    gamma: float = Field(
        1.0,
        ge=0.0,
        allow_inf_nan=False,
        description="dynamic: distance temperature γ",
    )
    distance_scale: DistanceScale = "median"
    quality_beta: float = Field(
        0.0,
        ge=0.0,
        allow_inf_nan=False,
        description="dynamic: validation-loss weight β",
    )


@register_strategy("dynamic", DynamicOptions)
class Dynamic:
    """Down-weights clients far from the consensus update (seed rule, eq. 1-3).

    Args:
        gamma: Distance sharpness γ ≥ 0; 0 gives FedAvg (with β = 0).
        distance_scale: ``"median"`` (default: d_k / median d, so γ is
            unitless), ``"mean"``, or ``"none"`` (the literal seed formula, γ in
            units of 1/‖ΔP‖).
        quality_beta: β ≥ 0 of the quality factor ``exp(−β ℓ_k)`` where ℓ_k is
            the client's ``val_loss`` metric; 0 disables it.

    Raises:
        ValueError: for a value outside its range.
    """

    name = "dynamic"
    needs_mean = True
    dp_role: DpRole | None = None
    dp_refusal = (
        "its weights depend on every client's update, so one client changes all "
        "weights and the sensitivity is not bounded by C"
    )

    def __init__(
        self,
        gamma: float = 1.0,
        distance_scale: DistanceScale = "median",
        quality_beta: float = 0.0,
    ) -> None:
        for key, value in (("gamma", gamma), ("quality_beta", quality_beta)):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{key} must be a finite number >= 0, got {value!r}")
        if distance_scale not in DISTANCE_SCALES:
            raise ValueError(
                f"distance_scale must be one of {DISTANCE_SCALES}, "
                f"got {distance_scale!r}"
            )
        self.gamma = float(gamma)
        self.distance_scale: DistanceScale = distance_scale
        self.quality_beta = float(quality_beta)

    def client_config(self, server_round: int) -> dict[str, float]:
        """No extra local-training settings."""
        return {}

    def _losses(self, updates: Sequence[ClientUpdate]) -> list[float] | None:
        """ℓ_k from each client's metrics, or ``None`` when β = 0."""
        if self.quality_beta == 0:
            return None
        for u in updates:
            if QUALITY_METRIC not in u.metrics:
                raise ValueError(
                    f"update from client {u.client_id} has no {QUALITY_METRIC!r} "
                    f"metric, needed by quality_beta={self.quality_beta}"
                )
        return [float(u.metrics[QUALITY_METRIC]) for u in updates]

    def compute_weights(self, updates: Sequence[ClientUpdate]) -> DynamicWeights:
        """The normalised weights and distances for this round's updates."""
        return dynamic_weights(
            [u.delta for u in updates],
            [u.num_examples for u in updates],
            gamma=self.gamma,
            distance_scale=self.distance_scale,
            quality_beta=self.quality_beta,
            losses=self._losses(updates),
        )

    def weights(self, updates: Sequence[ClientUpdate]) -> Float64Array:
        """The normalised dynamic weights (eq. 2) of this round's updates."""
        return self.compute_weights(updates).weights

    def round_stats(
        self, updates: Sequence[ClientUpdate], total_examples: int, secure_sum: SumFn
    ) -> RoundStats:
        """Two secure sums: Σ ΔP_k with the count (the uniform mean, broadcast
        back), then, for ``distance_scale = "mean"``, the 1-value sum of the
        clients' own distances d_k; no individual d_k is revealed.

        Raises:
            ValueError: for ``distance_scale = "median"``, which needs every
                client's distance.
        """
        self.check_secure()
        packed = [{**u.delta, COUNT_KEY: np.ones(1, np.float32)} for u in updates]
        total = secure_sum(packed)
        count = float(total.pop(COUNT_KEY)[0])
        mean = {k: (v / count).astype(np.float32) for k, v in total.items()}
        scale = 1.0
        if self.distance_scale == "mean":
            flat_mean = flatten(mean)
            dist = [
                {"d": np.array([np.linalg.norm(flatten(u.delta) - flat_mean)])}
                for u in updates
            ]
            scale = float(secure_sum(dist)["d"][0]) / count or 1.0
        return RoundStats(total_examples, mean, scale)

    def client_weight(self, update: ClientUpdate, stats: RoundStats) -> float:
        """``(n_k/n_total) · exp(−γ d_k / s) · exp(−β ℓ_k)`` from client k's own
        delta and the broadcast mean. Clients cannot normalise by the largest
        weight without revealing it, so the log weight is clamped at −60:
        weights underflow to ~0 only for clients far beyond the others."""
        if stats.mean_delta is None:
            raise ValueError("dynamic client weights need the round's mean delta")
        d = float(np.linalg.norm(flatten(update.delta) - flatten(stats.mean_delta)))
        log_w = (
            math.log(max(update.num_examples, 1) / stats.total_examples)
            - self.gamma * d / stats.distance_scale
            - self.quality_beta * float(update.metrics.get(QUALITY_METRIC, 0.0))
        )
        return math.exp(max(log_w, -60.0))

    def check_secure(self) -> None:
        """Refuse settings that secure aggregation cannot compute.

        Raises:
            ValueError: for ``distance_scale = "median"``.
        """
        if self.distance_scale == "median":
            raise ValueError(
                "strategy.distance_scale = 'median' needs every client's distance, "
                "which secure aggregation hides; use 'mean' or 'none' with "
                "privacy.secagg = true"
            )

    def step(
        self, server_round: int, global_params: Params, mean_delta: Params
    ) -> tuple[Params, dict[str, float]]:
        """``P + Σ_k w_k ΔP_k / Σ_k w_k`` (eq. 3)."""
        return add_params(global_params, mean_delta), {}

    def aggregate(
        self,
        server_round: int,
        global_params: Params,
        updates: Sequence[ClientUpdate],
    ) -> tuple[Params, dict[str, float]]:
        """``P + Σ_k w_k ΔP_k`` with the dynamic weights; inputs are not mutated.

        Metrics add ``distance_mean``/``distance_min``/``distance_max`` (raw d_k).

        Raises:
            ValueError: for invalid updates (naming the client) or a missing
                ``val_loss`` when ``quality_beta > 0``.
        """
        validate_updates(server_round, global_params, updates)
        result = self.compute_weights(updates)
        step = weighted_mean([u.delta for u in updates], result.weights)
        metrics = weight_metrics(result.weights, step)
        metrics["distance_mean"] = float(np.mean(result.distances))
        metrics["distance_min"] = float(np.min(result.distances))
        metrics["distance_max"] = float(np.max(result.distances))
        return add_params(global_params, step), metrics

    def state_dict(self) -> dict[str, np.ndarray[Any, Any]]:
        """Stateless: ``{}``."""
        return {}

    def load_state_dict(self, state: Mapping[str, np.ndarray[Any, Any]]) -> None:
        """Accept only the empty state."""
        check_empty_state(self.name, state)
