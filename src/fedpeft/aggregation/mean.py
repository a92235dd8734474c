"""Weighted means of parameter updates and the flat-vector view of :data:`Params`.

Pure numpy over plain arrays: no torch, no I/O. Every function returns new arrays
and never mutates its arguments.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from fedpeft.types import Float64Array, Params, ParamsLike, check_params_like


def check_weights(weights: npt.ArrayLike, count: int) -> Float64Array:
    """Validate aggregation weights and return them as a float64 vector.

    Args:
        weights: One non-negative, finite weight per update; need not sum to 1.
        count: The number of updates the weights belong to.

    Returns:
        The weights as a 1-D float64 array of length ``count``.

    Raises:
        ValueError: if the weights are not a vector of length ``count``, contain
            NaN/inf or negative values, or sum to zero.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (count,):
        raise ValueError(
            f"expected {count} weights (one per update), got an array of shape "
            f"{w.shape}"
        )
    if not np.all(np.isfinite(w)):
        raise ValueError(f"weights must be finite, got {w.tolist()}")
    if np.any(w < 0):
        raise ValueError(f"weights must be >= 0, got {w.tolist()}")
    if not w.sum() > 0:
        raise ValueError(f"weights must have a positive sum, got {w.tolist()}")
    return w


def check_updates(updates: Sequence[ParamsLike]) -> None:
    """Raise ``ValueError`` unless ``updates`` is non-empty and all updates share
    the first one's keys and shapes and hold only finite values."""
    if len(updates) == 0:
        raise ValueError("cannot aggregate zero updates; at least one is required")
    for i, update in enumerate(updates):
        check_params_like(updates[0], update, what=f"update {i}")


def weighted_mean(updates: Sequence[ParamsLike], weights: npt.ArrayLike) -> Params:
    """Weighted mean ``Σ_k w_k u_k / Σ_k w_k`` of parameter updates, per tensor.

    This is the aggregation step of FedAvg (McMahan et al. 2017, "Communication-
    Efficient Learning of Deep Networks from Decentralized Data", Algorithm 1) when
    ``w_k = n_k``. Sums are accumulated in float64 and the result is cast to
    float32, so many clients or large cancelling values lose no precision.

    Args:
        updates: K updates with identical keys and shapes.
        weights: K non-negative finite weights with a positive sum (normalised
            here, so raw example counts are fine).

    Returns:
        New float32 arrays with the updates' keys and shapes.

    Raises:
        ValueError: if there are no updates, their keys/shapes differ, a value is
            NaN/inf, or the weights are invalid (see :func:`check_weights`).
    """
    check_updates(updates)
    w = check_weights(weights, len(updates))
    w = w / w.sum()
    out: Params = {}
    for name in updates[0]:
        acc = np.zeros(updates[0][name].shape, dtype=np.float64)
        for w_k, update in zip(w, updates, strict=True):
            acc += w_k * np.asarray(update[name], dtype=np.float64)
        out[name] = acc.astype(np.float32)
    return out


def example_weights(num_examples: npt.ArrayLike) -> Float64Array:
    """FedAvg weights ``n_k / Σ_j n_j`` (McMahan et al. 2017, Algorithm 1).

    Raises:
        ValueError: if a count is negative or not finite, or all counts are zero.
    """
    n = np.asarray(num_examples, dtype=np.float64)
    if n.ndim != 1 or n.size == 0:
        raise ValueError(
            f"num_examples must be a non-empty 1-D sequence, got shape {n.shape}"
        )
    w = check_weights(n, n.size)
    normalised: Float64Array = w / w.sum()
    return normalised


def uniform_weights(count: int) -> Float64Array:
    """Equal weights ``1/K`` for ``count = K`` updates (FedPrompt, Zhao et al. 2022).

    Raises:
        ValueError: if ``count`` is not a positive integer.
    """
    if isinstance(count, bool) or not isinstance(count, int | np.integer) or count < 1:
        raise ValueError(f"count must be a positive integer, got {count!r}")
    return np.full(int(count), 1.0 / count, dtype=np.float64)


def flatten(params: ParamsLike) -> Float64Array:
    """Concatenate all tensors into one float64 vector, keys in sorted order.

    The order is stable (sorted names), so two parameter sets with the same layout
    flatten to comparable vectors. float32 values are represented exactly.
    """
    if len(params) == 0:
        return np.zeros(0, dtype=np.float64)
    return np.concatenate(
        [np.asarray(params[name], dtype=np.float64).ravel() for name in sorted(params)]
    )


def unflatten(vec: npt.ArrayLike, like: ParamsLike) -> Params:
    """Inverse of :func:`flatten`: split ``vec`` into float32 tensors shaped like
    ``like`` (sorted key order).

    Raises:
        ValueError: if ``vec`` is not 1-D or its length differs from the total
            number of elements of ``like``.
    """
    v = np.asarray(vec)
    sizes = [int(np.prod(like[name].shape)) for name in sorted(like)]
    if v.ndim != 1 or v.size != sum(sizes):
        raise ValueError(
            f"vector of shape {v.shape} does not match the layout, which needs a "
            f"1-D vector of {sum(sizes)} elements"
        )
    out: Params = {}
    start = 0
    for name, size in zip(sorted(like), sizes, strict=True):
        chunk = v[start : start + size].reshape(like[name].shape)
        out[name] = chunk.astype(np.float32)
        start += size
    return out


def add_params(params: ParamsLike, step: ParamsLike) -> Params:
    """Return ``params + step`` per tensor as new float32 arrays (sum in float64).

    Raises:
        ValueError: if ``step`` does not match ``params``' keys and shapes or holds
            NaN/inf.
    """
    check_params_like(params, step, what="step")
    return {
        name: (
            np.asarray(value, dtype=np.float64) + np.asarray(step[name], np.float64)
        ).astype(np.float32)
        for name, value in params.items()
    }


def global_norm(params: ParamsLike) -> float:
    """L2 norm of all tensors concatenated (the norm of :func:`flatten`)."""
    return float(np.linalg.norm(flatten(params)))
