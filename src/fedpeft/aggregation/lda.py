"""The ``lda`` warm start: class-means heads with a full, shrunk covariance.

The ``class-means`` head (:mod:`fedpeft.aggregation.class_means`) treats the
feature dimensions as independent. Sentence-encoder features are strongly
correlated, and that head trails a tuned linear probe by up to 9 points on the
tweets corpus (docs/benchmarks.md, "The lda warm start"). Linear discriminant
analysis with the pooled within-class covariance Σ fixes that, but Σ
(d × d from a few thousand examples) needs shrinkage (Friedman 1989,
regularized discriminant analysis)::

    Σ_λ = (1 − λ) Σ + λ diag(Σ),    W = M Σ_λ⁻¹,
    b_c = −½ μ_c Σ_λ⁻¹ μ_cᵀ + log π_c

(M: the class means as rows). λ = 1 is the diagonal ``class-means`` head.

Σ comes from sums too: every client adds its Gram matrix Σ_i h_i h_iᵀ to the
class statistics (:data:`FEATURE_GRAM`), so the head is still what the pooled
data would give, plain or under secure aggregation; it costs d² more values
per client (147,456 for a 384-wide encoder, about 0.6 MB in float32).

λ is picked, with the temperature, by the second exchange: the server sends
one candidate head per λ of :data:`SHRINKAGES` (:func:`with_candidates`), each
client sums the NLL of its *validation* split under every candidate and
temperature (:func:`candidate_nll_sums`), and the server keeps the pair with
the smallest total (:func:`pick_head`). Scored on training data the least
shrinkage would always win: Σ fits the data it was estimated on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from fedpeft.aggregation.class_means import (
    ABSENT_BIAS,
    TEMPERATURES,
    class_moments,
    class_statistics,
    nll_sums,
)
from fedpeft.types import Params

FEATURE_GRAM = "feature_gram"
"""Key of Σ_i h_i h_iᵀ ``(d, d)`` among a client's class statistics."""
SHRINKAGES = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
"""The λ the second exchange scores; 1.0 is the diagonal head."""
CANDIDATE_WEIGHT = "warm_start/candidates.weight"
CANDIDATE_BIAS = "warm_start/candidates.bias"
"""Keys of the stacked candidate heads ``(K, C, d)`` / ``(K, C)`` that ride on
the calibration request's payload (never on a trained state)."""
GRAM_FLAG = "gram"
"""Instruction-config flag of a ``class-stats`` request: add the Gram matrix."""


def gram(features: np.ndarray) -> np.ndarray:
    """Σ_i h_i h_iᵀ of ``features`` ``(n, d)``, in float64."""
    f = np.asarray(features, dtype=np.float64)
    return f.T @ f


def shrunk_heads(
    stats: Mapping[str, np.ndarray], shrinkages: Sequence[float] = SHRINKAGES
) -> list[Params]:
    """One LDA head per λ (module docstring) from summed statistics.

    Raises:
        ValueError: the statistics lack the Gram matrix, or are malformed
            (:func:`fedpeft.aggregation.class_means.class_moments`).
    """
    if FEATURE_GRAM not in stats:
        raise ValueError(
            f"class statistics lack {FEATURE_GRAM!r}; the lda warm start needs "
            "every client's Gram matrix"
        )
    means, prior, held, var, total = class_moments(stats)
    d = means.shape[1]
    g = np.asarray(stats[FEATURE_GRAM], np.float64)
    if g.shape != (d, d) or not np.isfinite(g).all():
        raise ValueError(f"the Gram matrix has shape {g.shape}, expected ({d}, {d})")
    cov = g / total - (means.T * prior) @ means
    cov = 0.5 * (cov + cov.T)  # the quantizer's error is not symmetric
    heads = []
    for lam in shrinkages:
        if not 0.0 < lam <= 1.0:
            raise ValueError(f"shrinkage {lam} is outside (0, 1]")
        if lam == 1.0:
            weight = means / var
        else:
            shrunk = (1.0 - lam) * cov
            shrunk[np.diag_indices(d)] = (1.0 - lam) * np.diag(cov) + lam * var
            weight = np.linalg.solve(shrunk, means.T).T
        bias = -0.5 * (weight * means).sum(axis=1) + np.log(np.where(held, prior, 1.0))
        weight[~held] = 0.0
        bias[~held] = ABSENT_BIAS
        heads.append(
            {
                "head.weight": weight.astype(np.float32),
                "head.bias": bias.astype(np.float32),
            }
        )
    return heads


def with_candidates(params: Params, heads: Sequence[Params]) -> Params:
    """``params`` with ``heads`` stacked under the candidate keys."""
    return {
        **params,
        CANDIDATE_WEIGHT: np.stack([h["head.weight"] for h in heads]),
        CANDIDATE_BIAS: np.stack([h["head.bias"] for h in heads]),
    }


def split_candidates(params: Params) -> tuple[Params, list[Params]]:
    """``params`` without the candidate heads, and the candidates (``[]``:
    none rode on it)."""
    rest = {
        k: v for k, v in params.items() if k not in (CANDIDATE_WEIGHT, CANDIDATE_BIAS)
    }
    if CANDIDATE_WEIGHT not in params:
        return rest, []
    weights, biases = params[CANDIDATE_WEIGHT], params[CANDIDATE_BIAS]
    heads = [
        {"head.weight": np.asarray(w), "head.bias": np.asarray(b)}
        for w, b in zip(weights, biases, strict=True)
    ]
    return rest, heads


def candidate_nll_sums(
    features: np.ndarray, labels: np.ndarray, heads: Sequence[Params]
) -> np.ndarray:
    """Σ_i NLL of every candidate head at every temperature: ``(K, T)``."""
    f = np.asarray(features, np.float64)
    return np.stack(
        [
            nll_sums(
                f @ np.asarray(h["head.weight"], np.float64).T + h["head.bias"], labels
            )
            for h in heads
        ]
    )


def pick_head(
    heads: Sequence[Params],
    sums: np.ndarray,
    shrinkages: Sequence[float] = SHRINKAGES,
    temperatures: np.ndarray = TEMPERATURES,
) -> tuple[Params, float, float]:
    """The candidate and temperature with the smallest summed NLL: the head
    divided by that temperature, its λ and the temperature.

    Raises:
        ValueError: ``sums`` is not one finite value per (candidate,
            temperature), or no example was scored.
    """
    sums = np.asarray(sums, np.float64)
    if sums.shape != (len(heads), len(temperatures)) or not np.isfinite(sums).all():
        raise ValueError(
            f"candidate NLL sums have shape {sums.shape} (expected "
            f"{(len(heads), len(temperatures))}) or non-finite values"
        )
    if not np.any(sums):
        raise ValueError(
            "no client scored the candidate heads (no validation examples); the "
            "lda warm start needs partition.val_fraction > 0"
        )
    k, t = (int(i) for i in np.unravel_index(int(np.argmin(sums)), sums.shape))
    temp = float(temperatures[t])
    head = {n: (np.asarray(v) / temp).astype(np.float32) for n, v in heads[k].items()}
    return head, float(shrinkages[k]), temp


def pooled_lda_head(
    features: np.ndarray,
    labels: np.ndarray,
    val_features: np.ndarray,
    val_labels: np.ndarray,
    num_classes: int,
) -> Params:
    """The ``lda`` head of one data set held in one place, λ and temperature
    picked on ``val_*`` (what the two federated exchanges compute)."""
    stats = class_statistics(features, labels, num_classes)
    stats[FEATURE_GRAM] = gram(features)
    heads = shrunk_heads(stats)
    return pick_head(heads, candidate_nll_sums(val_features, val_labels, heads))[0]
