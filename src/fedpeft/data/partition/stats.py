"""Per-client train/validation splits, label statistics and integer apportioning."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from fedpeft.data.partition.base import IntArray


def allocate_proportional(total: int, weights: npt.ArrayLike) -> IntArray:
    """Split the integer ``total`` into parts proportional to ``weights``.

    Uses the largest-remainder (Hamilton) method: each part gets the floor of its
    exact share, and the leftover units go to the largest fractional remainders
    (ties to the lower index). The parts sum exactly to ``total`` and each is
    within 1 of its exact share ``total * w_i / sum(w)``.

    Args:
        total: Non-negative integer to split.
        weights: Non-negative weights, shape ``(k,)``, not all zero.

    Returns:
        int64 parts, shape ``(k,)``.
    """
    w = np.asarray(weights, dtype=np.float64)
    if total < 0 or w.ndim != 1 or np.any(w < 0) or not w.sum() > 0:
        raise ValueError(
            f"need total >= 0 and non-negative 1-D weights with a positive sum, "
            f"got total={total}, weights={w}"
        )
    exact = total * w / w.sum()
    parts: IntArray = np.floor(exact).astype(np.int64)
    leftover = total - int(parts.sum())
    order = np.argsort(-(exact - parts), kind="stable")
    parts[order[:leftover]] += 1
    return parts


def split_train_val(
    indices: npt.NDArray[Any], val_fraction: float, rng: np.random.Generator
) -> tuple[IntArray, IntArray]:
    """Shuffle one client's shard and split off a validation part.

    The validation part has ``round(val_fraction * n)`` examples, at least 1 when
    ``val_fraction > 0`` and ``n >= 2``, and always leaves at least 1 training
    example; it is empty when ``val_fraction == 0``.

    Args:
        indices: The client's example indices, shape ``(n,)``, ``n >= 1``.
        val_fraction: Fraction for validation, in ``[0, 1)``.
        rng: Generator for the shuffle (derive it from the run seed and client).

    Returns:
        ``(train, val)`` int64 index arrays, disjoint, together ``indices``.
    """
    idx = np.asarray(indices, dtype=np.int64)
    if idx.ndim != 1 or len(idx) == 0:
        raise ValueError(
            f"indices must be a non-empty 1-D array, got shape {idx.shape}"
        )
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction={val_fraction!r} must be in [0, 1)")
    n = len(idx)
    n_val = round(val_fraction * n)
    if val_fraction > 0:
        n_val = max(n_val, 1)
    n_val = min(n_val, n - 1)
    shuffled = rng.permutation(idx)
    return shuffled[n_val:], shuffled[:n_val]


def label_distribution(
    labels: npt.NDArray[Any], parts: Sequence[npt.NDArray[Any]], num_classes: int
) -> IntArray:
    """Count each class in each client's part.

    Returns:
        int64 counts, shape ``(clients, num_classes)``.
    """
    y = np.asarray(labels, dtype=np.int64)
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes}), got {y.min()}..{y.max()}"
        )
    rows = [
        np.bincount(y[np.asarray(p, dtype=np.int64)], minlength=num_classes)
        for p in parts
    ]
    return np.array(rows, dtype=np.int64).reshape(len(parts), num_classes)


def label_skew(
    labels: npt.NDArray[Any], parts: Sequence[npt.NDArray[Any]], num_classes: int
) -> float:
    """Mean total-variation distance between client and global label mixes.

    ``mean_k 0.5 * sum_c |p_k(c) - p(c)|`` over the non-empty clients k, where
    ``p_k`` is client k's class distribution and ``p`` the pooled one. 0 means
    every client sees the global mix; values near 1 mean clients hold classes
    that are rare overall.
    """
    counts = label_distribution(labels, parts, num_classes).astype(np.float64)
    sizes = counts.sum(axis=1)
    counts = counts[sizes > 0]
    if len(counts) == 0:
        raise ValueError("all parts are empty")
    client_mix = counts / counts.sum(axis=1, keepdims=True)  # (clients, classes)
    global_mix = counts.sum(axis=0) / counts.sum()  # (classes,)
    return float(np.mean(0.5 * np.abs(client_mix - global_mix).sum(axis=1)))
