"""The DP-FedAvg server mean, central or distributed (pure numpy).

McMahan et al. 2018, "Learning Differentially Private Recurrent Language
Models", Algorithm 1 with equal weights and the fixed-denominator estimator:

    Δ̄ = ( Σ_{k∈S} Δ_k · min(1, C/‖Δ_k‖₂)  +  N(0, σ²C² I) ) / m̄

m̄ is PUBLIC: the expected number of participants (q·N under Poisson sampling,
m under fixed-size sampling), never the number that actually arrived.

* central: :func:`dp_mean` does all of it on the server;
* distributed (under secure aggregation): each client runs
  :func:`privatize_update` (clip, add its ``N(0, σ²C²/m)`` share), the secure sum
  yields the noised sum, and the server applies :func:`mean_from_noisy_sum`.
  Caveats: the guarantee assumes every client adds its share honestly; if only
  m' < m shares arrive the realised σ is σ·√(m'/m)
  (:func:`fedpeft.privacy.noise.effective_noise_multiplier`); and quantizing the
  noised updates into Z_(2^b) before summing is not covered by the continuous
  Gaussian analysis (Kairouz et al. 2021 account for it with the discrete
  Gaussian and scaled sensitivity).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedpeft.privacy.accounting import check_count, check_positive
from fedpeft.privacy.clipping import check_clip_norm, clip_update
from fedpeft.privacy.noise import (
    add_noise,
    central_noise_std,
    distributed_noise_std,
    gaussian_noise_like,
)
from fedpeft.types import Params, ParamsLike, check_params_like


@dataclass(frozen=True)
class DpMeanStats:
    """Diagnostics of one DP mean.

    ``clipped_fraction`` and ``mean_update_norm`` are computed from raw updates
    and are NOT differentially private: log them for debugging only, never
    publish them alongside the model as if covered by ε.
    """

    num_updates: int
    noise_std: float
    clipped_fraction: float
    mean_update_norm: float

    def as_dict(self, prefix: str = "dp_") -> dict[str, float]:
        return {
            f"{prefix}num_updates": float(self.num_updates),
            f"{prefix}noise_std": self.noise_std,
            f"{prefix}clipped_fraction": self.clipped_fraction,
            f"{prefix}mean_update_norm": self.mean_update_norm,
        }


def _clipped_sum(
    like: ParamsLike, deltas: Sequence[ParamsLike], clip_norm: float
) -> tuple[dict[str, np.ndarray], list[float]]:
    """Σ_k clip(Δ_k) in float64, and the original norms ‖Δ_k‖₂."""
    total = {n: np.zeros(np.shape(a), np.float64) for n, a in like.items()}
    norms: list[float] = []
    for delta in deltas:
        clipped, norm = clip_update(delta, clip_norm)
        norms.append(norm)
        for name in total:
            total[name] += clipped[name]
    return total, norms


def dp_mean(
    like: ParamsLike,
    deltas: Sequence[ParamsLike],
    *,
    clip_norm: float,
    noise_multiplier: float,
    expected_clients: float,
    rng: np.random.Generator | None,
    secure: bool = False,
) -> tuple[Params, DpMeanStats]:
    """Central DP-FedAvg mean (McMahan et al. 2018, Alg. 1; formula above).

    Args:
        like: The payload layout (e.g. the global params); needed because a
            Poisson round may sample no client and still releases noise / m̄.
        deltas: The sampled clients' updates (may be empty); never mutated.
        clip_norm: C > 0.
        noise_multiplier: σ ≥ 0 (0 gives a clipped mean without DP).
        expected_clients: m̄ > 0, public: q·N (Poisson) or m (fixed-size).
        rng: Seeded generator, or ``None`` with ``secure=True``.
        secure: Draw the noise from OS entropy.

    Returns:
        The float32 DP mean and :class:`DpMeanStats`.

    Raises:
        ValueError: for layouts that differ from ``like``, NaN/inf updates or
            out-of-range arguments.
    """
    c = check_clip_norm(clip_norm, "clip_norm")
    denominator = check_positive(expected_clients, "expected_clients")
    for i, delta in enumerate(deltas):
        check_params_like(like, delta, what=f"update {i}")
    total, norms = _clipped_sum(like, deltas, c)
    std = central_noise_std(noise_multiplier, c)
    noised = add_noise(total, gaussian_noise_like(like, std, rng, secure))
    mean = {
        n: (a.astype(np.float64) / denominator).astype(np.float32)
        for n, a in noised.items()
    }
    stats = DpMeanStats(
        num_updates=len(deltas),
        noise_std=std / denominator,
        clipped_fraction=float(np.mean([x > c for x in norms])) if norms else 0.0,
        mean_update_norm=float(np.mean(norms)) if norms else 0.0,
    )
    return mean, stats


def privatize_update(
    delta: ParamsLike,
    *,
    clip_norm: float,
    noise_multiplier: float,
    num_clients: int,
    rng: np.random.Generator | None,
    secure: bool = False,
) -> tuple[Params, float]:
    """One client's share in distributed DP: clip to C, add ``N(0, σ²C²/m)``.

    Args:
        delta: The client's update.
        clip_norm: C > 0.
        noise_multiplier: σ ≥ 0 of the whole sum.
        num_clients: m, the number of shares the secure sum will add.
        rng: The client's seeded generator, or ``None`` with ``secure=True``
            (use secure mode in deployment: a seed known to the server would let
            it subtract the noise).
        secure: Draw from OS entropy.

    Returns:
        ``(noised float32 update, original norm ‖Δ‖₂)``.
    """
    clipped, norm = clip_update(delta, clip_norm)
    std = distributed_noise_std(noise_multiplier, clip_norm, num_clients)
    return add_noise(clipped, gaussian_noise_like(clipped, std, rng, secure)), norm


def mean_from_noisy_sum(noisy_sum: ParamsLike, expected_clients: float) -> Params:
    """Server side of distributed DP: the securely summed shares divided by m̄."""
    denominator = check_positive(expected_clients, "expected_clients")
    check_params_like(noisy_sum, noisy_sum, what="noisy sum")
    return {
        name: (np.asarray(a, np.float64) / denominator).astype(np.float32)
        for name, a in noisy_sum.items()
    }


def expected_clients(
    sampling: str,
    *,
    num_clients: int,
    clients_per_round: int | None = None,
    sample_rate: float | None = None,
) -> float:
    """The public denominator m̄: ``q·N`` (``"poisson"``) or ``m`` (``"fixed"``).

    Raises:
        ValueError: for an unknown sampling or a missing/invalid size.
    """
    n = check_count(num_clients, "num_clients")
    if sampling == "fixed" and clients_per_round is not None:
        return float(check_count(clients_per_round, "clients_per_round"))
    if sampling == "poisson" and sample_rate is not None:
        return check_positive(sample_rate, "sample_rate") * n
    raise ValueError(
        f"sampling={sampling!r}: 'fixed' needs clients_per_round, 'poisson' "
        "needs sample_rate"
    )
