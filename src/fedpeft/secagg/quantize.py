"""Fixed-point quantization into Z_(2^b) with stochastic rounding.

Secure aggregation adds masks modulo 2^b, so client inputs must be integers
(Bonawitz et al. 2017, "Practical Secure Aggregation for Privacy-Preserving
Machine Learning", §3: inputs are vectors in Z_R). A float x is clipped to
[-r, r] and mapped to one of L + 1 levels, L = 2^q - 1:

    level(x) = (clip(x, -r, r) + r) / Δ,   Δ = 2r / L,

rounded down or up at random with P(up) = the fractional part, so the rounded
level is an unbiased estimate of level(x) (stochastic rounding, as in the
distributed DP / SecAgg line of work, e.g. Kairouz et al. 2021 "The
Distributed Discrete Gaussian Mechanism", §4).

Overflow bound: the server recovers Σ_u level_u mod 2^b. Each level lies in
[0, 2^q), so the sum of N levels is exact iff N · (2^q - 1) < 2^b. q is
therefore chosen from N and b (:func:`safe_value_bits`), and
:func:`check_overflow` refuses any (N, q, b) that could wrap around.

Error bound: each client's rounded level differs from its exact level by less
than one step Δ, so the dequantized sum of N clipped inputs differs from their
true sum by less than N · Δ = N · 2r / (2^q - 1) per coordinate
(:func:`sum_error_bound`). Clipping adds error only for inputs outside [-r, r].
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fedpeft.types import Float64Array

MAX_BITS = 62
"""Largest modulus exponent b; sums of two values < 2^62 still fit in uint64."""

MAX_VALUE_BITS = 52
"""Largest q: levels up to 2^52 are exact in float64 (and float32 inputs carry
only 24 significant bits, so more would buy nothing)."""

UInt64Array = npt.NDArray[np.uint64]


def largest_safe_clients(value_bits: int, bits: int) -> int:
    """Largest N with N · (2^q - 1) < 2^b, for q = ``value_bits``, b = ``bits``."""
    return ((1 << bits) - 1) // ((1 << value_bits) - 1)


def check_overflow(num_clients: int, value_bits: int, bits: int) -> None:
    """Raise unless the sum of ``num_clients`` q-bit values fits in Z_(2^b).

    Raises:
        ValueError: if N · (2^q - 1) >= 2^b; the message names N, b, q and the
            largest safe N.
    """
    _check_bits(value_bits, bits)
    if num_clients < 1:
        raise ValueError(f"num_clients must be >= 1, got {num_clients}")
    safe = largest_safe_clients(value_bits, bits)
    if num_clients > safe:
        raise ValueError(
            f"overflow: the sum of N={num_clients} values of q={value_bits} bits "
            f"can exceed 2^b with b={bits} (needs N·(2^q−1) < 2^b); the largest "
            f"safe N is {safe}; raise b or lower q"
        )


def safe_value_bits(num_clients: int, bits: int) -> int:
    """Largest q <= 52 such that N · (2^q - 1) < 2^b.

    Raises:
        ValueError: if even q = 1 overflows (N >= 2^b); names N and b.
    """
    _check_bits(1, bits)
    if num_clients < 1:
        raise ValueError(f"num_clients must be >= 1, got {num_clients}")
    per_client = ((1 << bits) - 1) // num_clients  # max level sum per client
    q = min((per_client + 1).bit_length() - 1, MAX_VALUE_BITS)
    if q < 1:
        raise ValueError(
            f"overflow: N={num_clients} clients cannot share b={bits} bits even "
            f"with 1-bit values; the largest safe N is {(1 << bits) - 1}"
        )
    return q


def quantization_step(clip_range: float, value_bits: int) -> float:
    """Δ = 2r / (2^q - 1), the distance between two adjacent levels."""
    return 2.0 * clip_range / ((1 << value_bits) - 1)


def sum_error_bound(num_summed: int, clip_range: float, value_bits: int) -> float:
    """N · Δ: the per-coordinate bound on |dequantized sum − sum of clipped x|."""
    return num_summed * quantization_step(clip_range, value_bits)


def quantize(
    x: npt.ArrayLike, clip_range: float, value_bits: int, rng: np.random.Generator
) -> UInt64Array:
    """Clip to [-r, r] and map to levels in [0, 2^q − 1] with stochastic rounding.

    Args:
        x: Real values, any shape (flattened to 1-D).
        clip_range: r > 0.
        value_bits: q in [1, 52].
        rng: Source of the rounding coins (one uniform draw per coordinate).

    Returns:
        A 1-D uint64 array of levels, E[level · Δ − r] = clip(x).

    Raises:
        ValueError: if x holds NaN/inf, r <= 0 or q is out of range.
    """
    _check_bits(value_bits, MAX_BITS)
    values = np.asarray(x, dtype=np.float64).ravel()  # (D,)
    if not np.all(np.isfinite(values)):
        raise ValueError("cannot quantize NaN or infinite values")
    if not clip_range > 0:
        raise ValueError(f"clip_range must be > 0, got {clip_range}")
    top = (1 << value_bits) - 1
    scaled = (np.clip(values, -clip_range, clip_range) + clip_range) / (
        quantization_step(clip_range, value_bits)
    )
    low = np.floor(scaled)
    up = rng.random(values.shape) < (scaled - low)
    levels: UInt64Array = np.clip(low + up, 0, top).astype(np.uint64)
    return levels


def dequantize_sum(
    total: npt.NDArray[np.uint64],
    num_summed: int,
    clip_range: float,
    value_bits: int,
    bits: int,
) -> Float64Array:
    """Map the sum of ``num_summed`` level vectors back to the sum of the reals.

    Σ_u (level_u · Δ − r) = Δ · total − N · r = (2 · total − N · L) · (r / L)
    with L = 2^q − 1; the bracket is formed in int64, so the large offset N · r
    is removed exactly before anything is rounded to float64.

    Raises:
        ValueError: if N · (2^q − 1) >= 2^b (the sum may have wrapped) or a
            value of ``total`` exceeds N · (2^q − 1) (masks were not removed).
    """
    check_overflow(num_summed, value_bits, bits)
    top = (1 << value_bits) - 1
    t = np.asarray(total, dtype=np.uint64)
    if t.size and int(t.max()) > num_summed * top:
        raise ValueError(
            f"sum value {int(t.max())} exceeds N·(2^q−1) = {num_summed * top}: "
            "the masks were not all removed or N is wrong"
        )
    centered = 2 * t.astype(np.int64) - np.int64(num_summed * top)
    result: Float64Array = centered.astype(np.float64) * (clip_range / top)
    return result


def _check_bits(value_bits: int, bits: int) -> None:
    if not 1 <= bits <= MAX_BITS:
        raise ValueError(f"bits b must be in [1, {MAX_BITS}], got {bits}")
    if not 1 <= value_bits <= min(bits, MAX_VALUE_BITS):
        raise ValueError(
            f"value_bits q must be in [1, {min(bits, MAX_VALUE_BITS)}], "
            f"got {value_bits}"
        )
