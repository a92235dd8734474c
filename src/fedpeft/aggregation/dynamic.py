"""Heterogeneity-aware (dynamic) aggregation weights — the project's seed rule.

For K participating clients with deltas ΔP_k and example counts n_k:

    d_k = ‖ΔP_k − mean_j ΔP_j‖₂                                         (1)
    w_k ∝ (n_k / Σ_j n_j) · exp(−γ · d̃_k) · exp(−β · ℓ_k)               (2)
    P   ← P + Σ_k w_k ΔP_k / Σ_k w_k                                    (3)

where the norm in (1) is the L2 norm of all tensors flattened and concatenated,
``mean_j ΔP_j`` is the UNIFORM (unweighted) mean over the participating clients,
d̃_k is d_k optionally divided by the median or mean distance, and ℓ_k is the
client's validation loss (the optional quality factor; β = 0 disables it).
Clients whose update lies far from the consensus get exponentially less weight.

Weights are computed in log space, ``log n_k − γ d̃_k − β ℓ_k``, shifted by the
maximum before exponentiating, so huge distances or losses cannot overflow or turn
into NaN: far clients simply get weight 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import numpy.typing as npt

from fedpeft.aggregation.mean import (
    add_params,
    check_updates,
    example_weights,
    flatten,
    weighted_mean,
)
from fedpeft.types import Float64Array, Params, ParamsLike

DistanceScale = Literal["none", "median", "mean"]
DISTANCE_SCALES: tuple[str, ...] = get_args(DistanceScale)


@dataclass(frozen=True)
class DynamicWeights:
    """Result of :func:`dynamic_weights`.

    Attributes:
        weights: Normalised weights w_k, shape (K,), summing to 1.
        distances: Raw distances d_k of eq. (1), shape (K,), for logging.
        scaled_distances: d̃_k as used in eq. (2) after ``distance_scale``.
    """

    weights: Float64Array
    distances: Float64Array
    scaled_distances: Float64Array


def client_distances(deltas: Sequence[ParamsLike]) -> Float64Array:
    """Distances ``d_k = ‖ΔP_k − mean_j ΔP_j‖₂`` of eq. (1), in float64.

    The norm is taken over all tensors flattened and concatenated; the mean is the
    uniform mean over the given clients.

    Raises:
        ValueError: if there are no deltas or their layouts differ or hold NaN/inf.
    """
    check_updates(deltas)
    flat = np.stack([flatten(delta) for delta in deltas])  # (K, D)
    centre = flat.mean(axis=0)  # (D,)
    distances: Float64Array = np.linalg.norm(flat - centre, axis=1)
    return distances


def scale_distances(distances: Float64Array, mode: DistanceScale) -> Float64Array:
    """Make distances scale-free: divide by their median or mean, or leave them.

    ``"none"`` is the literal seed formula (γ then has the units of 1/‖ΔP‖);
    ``"median"``/``"mean"`` divide by the median/mean distance so γ is unitless.
    A zero median/mean (e.g. all updates identical) divides by 1 instead.

    Raises:
        ValueError: for an unknown ``mode``.
    """
    if mode == "none":
        return distances.copy()
    if mode == "median":
        scale = float(np.median(distances))
    elif mode == "mean":
        scale = float(np.mean(distances))
    else:
        raise ValueError(
            f"distance_scale must be one of {DISTANCE_SCALES}, got {mode!r}"
        )
    return distances / (scale if scale > 0 else 1.0)


def _check_nonneg(name: str, value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def _quality_term(
    losses: npt.ArrayLike | None, beta: float, count: int
) -> Float64Array:
    """``β · ℓ_k`` of eq. (2), or zeros when β = 0."""
    if beta == 0:
        return np.zeros(count)
    if losses is None:
        raise ValueError(
            f"quality_beta={beta} needs a validation loss from every client, "
            "got none; set quality_beta=0 to disable the quality factor"
        )
    loss = np.asarray(losses, dtype=np.float64)
    if loss.shape != (count,) or not np.all(np.isfinite(loss)):
        raise ValueError(
            f"expected {count} finite validation losses, got {loss.tolist()}"
        )
    term: Float64Array = beta * (loss - loss.min())  # shift: same weights, no overflow
    return term


def _softmax_from_logs(log_w: Float64Array) -> Float64Array:
    """Normalise ``exp(log_w)`` to sum to 1 without overflow."""
    top = float(np.max(log_w))
    if not math.isfinite(top):
        raise ValueError(
            "every client weight underflowed to zero (gamma or quality_beta is "
            "too large for these distances/losses, or all clients have 0 examples)"
        )
    w = np.exp(log_w - top)
    normalised: Float64Array = w / w.sum()
    return normalised


def dynamic_weights(
    deltas: Sequence[ParamsLike],
    num_examples: npt.ArrayLike,
    gamma: float,
    distance_scale: DistanceScale = "none",
    quality_beta: float = 0.0,
    losses: npt.ArrayLike | None = None,
) -> DynamicWeights:
    """Heterogeneity-aware weights of eq. (2) (module docstring), summing to 1.

    ``w_k ∝ (n_k/Σn) · exp(−γ d̃_k) · exp(−β ℓ_k)`` with
    ``d_k = ‖ΔP_k − mean ΔP‖₂`` over the concatenation of all tensors and the
    UNIFORM mean of the participating clients' deltas. γ = 0 and β = 0 give the
    FedAvg weights ``n_k/Σn``.

    Args:
        deltas: K client deltas with identical layouts.
        num_examples: K example counts n_k (≥ 0, positive sum).
        gamma: Distance sharpness γ ≥ 0.
        distance_scale: ``"none"`` (literal seed formula), ``"median"`` or
            ``"mean"`` (divide d_k by that statistic; see :func:`scale_distances`).
        quality_beta: β ≥ 0 of the quality factor ``exp(−β ℓ_k)``; 0 disables it.
        losses: K validation losses ℓ_k; required when ``quality_beta > 0``.

    Returns:
        The normalised weights and the distances (raw and scaled) for logging.

    Raises:
        ValueError: for bad deltas, counts, γ, β, scale mode or missing losses.
    """
    _check_nonneg("gamma", gamma)
    _check_nonneg("quality_beta", quality_beta)
    distances = client_distances(deltas)
    scaled = scale_distances(distances, distance_scale)
    n = example_weights(num_examples)
    if n.size != len(deltas):
        raise ValueError(f"expected {len(deltas)} example counts, got {n.size}")
    with np.errstate(divide="ignore"):  # n_k = 0 -> log 0 = -inf -> weight 0
        log_w = np.log(n)
    log_w = log_w - gamma * (scaled - scaled.min())  # shift keeps the ratios
    log_w = log_w - _quality_term(losses, quality_beta, len(deltas))
    return DynamicWeights(_softmax_from_logs(log_w), distances, scaled)


def dynamic_aggregate(
    global_params: ParamsLike,
    deltas: Sequence[ParamsLike],
    num_examples: npt.ArrayLike,
    gamma: float,
    distance_scale: DistanceScale = "none",
    quality_beta: float = 0.0,
    losses: npt.ArrayLike | None = None,
) -> tuple[Params, DynamicWeights]:
    """Apply eq. (3): ``P + Σ_k w_k ΔP_k / Σ_k w_k`` with :func:`dynamic_weights`.

    Returns:
        New global parameters (float32) and the weights/distances used.

    Raises:
        ValueError: as :func:`dynamic_weights`, or if the deltas do not match
            ``global_params``.
    """
    result = dynamic_weights(
        deltas, num_examples, gamma, distance_scale, quality_beta, losses
    )
    step = weighted_mean(deltas, result.weights)
    return add_params(global_params, step), result
