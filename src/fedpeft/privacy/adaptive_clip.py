"""Adaptive clipping for DP-FedAvg (Andrew et al. 2021, "Differentially Private
Learning with Adaptive Clipping").

The clip norm C follows a target quantile γ of the clients' update norms.
Every round each sampled client reports the bit b_k = 1[‖Δ_k‖ ≤ C]; the
server releases the noisy fraction

    b̃ = (Σ_k b_k + N(0, σ_b²)) / m̄

and steps C geometrically: C ← C · exp(−η_C (b̃ − γ)).

Privacy: the clipped-update sum (sensitivity C, noise σ_Δ·C) and the count
(the centred bits b_k − ½ have sensitivity ½, noise σ_b) are one Gaussian
mechanism with noise multiplier σ = (σ_Δ⁻² + (2σ_b)⁻²)^(−½) (Andrew et al.,
Theorem 1). The run is accounted with σ; the update noise is
σ_Δ = (σ⁻² − (2σ_b)⁻²)^(−½), slightly larger than σ, which requires σ_b > σ/2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def update_noise_multiplier(sigma: float, count_std: float) -> float:
    """σ_Δ such that the update and count noises together are worth σ.

    Raises:
        ValueError: if ``count_std`` ≤ σ/2 (the count alone would spend the
            whole budget), naming the setting to raise.
    """
    if not (sigma > 0 and count_std > 0):
        raise ValueError(f"σ = {sigma} and σ_b = {count_std} must both be > 0")
    rest = sigma**-2 - (2.0 * count_std) ** -2
    if rest <= 0:
        raise ValueError(
            f"the clip-count noise σ_b = {count_std:g} must exceed σ/2 = "
            f"{sigma / 2:g}, or the count alone spends the privacy budget; raise "
            "privacy.client_dp.count_noise (Andrew et al. use expected clients / 20)"
        )
    return float(rest**-0.5)


@dataclass(frozen=True)
class AdaptiveClip:
    """The adaptive-clipping settings of a run.

    Attributes:
        quantile: γ, the target fraction of unclipped updates.
        lr: η_C, the geometric step size.
        count_std: σ_b, the noise std on the unclipped count.
        update_multiplier: σ_Δ, the update sum's noise multiplier.
    """

    quantile: float
    lr: float
    count_std: float
    update_multiplier: float

    def next_clip(
        self,
        clip: float,
        unclipped: float,
        expected_clients: float,
        rng: np.random.Generator | None,
    ) -> tuple[float, float]:
        """The next round's C and the released noisy unclipped fraction b̃.

        ``rng`` None draws the count's noise from OS entropy.
        """
        gen = rng if rng is not None else np.random.default_rng()
        noisy = (unclipped + float(gen.normal(0.0, self.count_std))) / expected_clients
        return clip * math.exp(-self.lr * (noisy - self.quantile)), noisy
