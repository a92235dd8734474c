"""FedLC's calibrated logits (Zhang et al. 2022, "Federated Learning with Label
Distribution Skew via Logits Calibration", ICML): train on
``logits − τ · n_c^(−1/4)``.

Every class's logit is lowered by an amount that grows as the client's count
of that class shrinks, so the pairwise margins the client learns are enlarged
for its rare classes and the local update stops pushing the head toward its
frequent ones. A class the client lacks uses n = 1e-8, i.e. an offset of
−100·τ (as in the reference implementations): it drops out of the softmax.
"""

from __future__ import annotations

import numpy as np

from fedpeft.config import ClientSection

ABSENT = 1e-8


def logit_calibration(
    counts: np.ndarray, cfg: ClientSection
) -> tuple[np.ndarray, np.ndarray]:
    """(scale, offset) = (1, −τ · max(n_c, ε)^(−1/4))."""
    return np.ones_like(counts), -cfg.calibration_tau * np.maximum(
        counts, ABSENT
    ) ** -0.25
