"""FedRS's restricted softmax (Li & Zhan 2021, "FedRS: Federated Learning with
Restricted Softmax for Label Distribution Non-IID Data", KDD): the logits of
the classes a client does not hold are scaled by α ∈ [0, 1] during local
training.

Without it, a client that never sees class c still pushes every feature away
from c's weight vector (c only ever appears in the softmax's denominator), so
the averaged head under-scores classes held by few clients. FedRS scales the
missing classes' weight vectors; this head has a bias, and the whole logit
(weight and bias part) is scaled.
"""

from __future__ import annotations

import numpy as np

from fedpeft.config import ClientSection


def restricted_softmax(
    counts: np.ndarray, cfg: ClientSection
) -> tuple[np.ndarray, np.ndarray]:
    """(scale, offset) = (1 for held classes, α for absent ones; 0)."""
    scale = np.where(counts > 0, 1.0, cfg.restricted_alpha)
    return scale, np.zeros_like(counts)
