"""L2 clipping of a whole parameter update (all tensors as one vector).

The clipping step of DP-FedAvg (McMahan et al. 2018, "Learning Differentially
Private Recurrent Language Models", Algorithm 1, ``ClipFn``; flat clipping):

    Δ̂ = Δ · min(1, C / ‖Δ‖₂)

where ‖Δ‖₂ is the global norm over every tensor of the update. It bounds each
client's contribution to the sum by C, which is what the Gaussian noise is
calibrated to. Pure numpy, float64 internally: a zero update is returned
unchanged (no division by zero), a huge one (e.g. 1e30 per coordinate) is
clipped exactly (no overflow), NaN/inf are refused.
"""

from __future__ import annotations

import math

import numpy as np

from fedpeft.aggregation.mean import flatten
from fedpeft.types import Params, ParamsLike

_SHRINK = 1.0 - 2.0**-21
"""Extra factor applied once if float32 rounding left ‖Δ̂‖ a hair above C."""


def check_clip_norm(max_norm: float, name: str = "max_norm") -> float:
    """Return ``max_norm`` as a float after checking it is finite and > 0.

    Raises:
        ValueError: naming ``name``, if the bound is not a finite number > 0.
    """
    if isinstance(max_norm, bool) or not isinstance(max_norm, int | float):
        raise ValueError(f"{name} must be a finite number > 0, got {max_norm!r}")
    if not (math.isfinite(max_norm) and max_norm > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {max_norm!r}")
    return float(max_norm)


def clip_factor(norm: float, max_norm: float) -> float:
    """The scale ``min(1, C / ‖Δ‖)`` that brings an update of norm ``norm`` to ≤ C.

    Safe for ``norm == 0`` (returns 1: nothing to clip).

    Args:
        norm: ‖Δ‖₂ ≥ 0 of the update.
        max_norm: The clipping bound C > 0.

    Raises:
        ValueError: if ``norm`` is negative/NaN/inf or ``max_norm`` is not > 0.
    """
    c = check_clip_norm(max_norm)
    if not (math.isfinite(norm) and norm >= 0):
        raise ValueError(f"norm must be a finite number >= 0, got {norm!r}")
    return 1.0 if norm <= c else c / norm


def _scaled(params: ParamsLike, factor: float) -> Params:
    return {
        name: (np.asarray(value, dtype=np.float64) * factor).astype(np.float32)
        for name, value in params.items()
    }


def clip_update(params: ParamsLike, max_norm: float) -> tuple[Params, float]:
    """Scale the whole update to global L2 norm ≤ ``max_norm`` (flat clipping).

    McMahan et al. 2018, Algorithm 1: ``Δ̂ = Δ · min(1, C/‖Δ‖₂)``. The norm and
    the scaling are computed in float64; the result is cast to float32. If that
    cast rounds the norm up past C (a relative 1e-7 effect), the result is shrunk
    once more by ``1 − 2⁻²¹`` so that ``‖Δ̂‖₂ ≤ C`` holds for the returned arrays.

    Args:
        params: The update Δ (any float arrays); never mutated.
        max_norm: The clipping bound C > 0.

    Returns:
        ``(clipped, norm)``: new float32 arrays with Δ's keys and shapes, and
        ‖Δ‖₂ of the ORIGINAL update (a float; 0.0 for an empty or zero update).

    Raises:
        ValueError: if ``max_norm`` is not a finite number > 0 or the update
            holds NaN/inf.
    """
    c = check_clip_norm(max_norm)
    flat = flatten(params)  # (total,) float64
    if not np.all(np.isfinite(flat)):
        raise ValueError("cannot clip an update holding NaN or infinite values")
    norm = float(np.linalg.norm(flat))
    factor = clip_factor(norm, c)
    clipped = _scaled(params, factor)
    if factor < 1.0 and float(np.linalg.norm(flatten(clipped))) > c:
        clipped = _scaled(params, factor * _SHRINK)
    return clipped, norm
