"""Balanced softmax (Ren et al. 2020, "Balanced Meta-Softmax for Long-Tailed
Visual Recognition"), used as a federated local loss (as in FedLC's and
FedLA's comparisons): train on ``logits + log n_c``.

Adding the client's log prior to the logits lets the softmax explain the
client's label frequencies by the prior instead of by the head and the
features; at test time the plain logits then estimate a class-balanced
posterior. A class the client lacks gets offset log ε (ε = 1e-8): it drops out
of the client's softmax.
"""

from __future__ import annotations

import numpy as np

from fedpeft.config import ClientSection

ABSENT = 1e-8
"""Count used for a class the client does not hold (its log is −18.4)."""


def balanced_softmax(
    counts: np.ndarray, cfg: ClientSection
) -> tuple[np.ndarray, np.ndarray]:
    """(scale, offset) = (1, log max(n_c, ε))."""
    return np.ones_like(counts), np.log(np.maximum(counts, ABSENT))
