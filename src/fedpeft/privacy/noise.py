"""Gaussian noise for a sum of clipped updates: seeded or from OS entropy.

The Gaussian mechanism of DP-FedAvg (McMahan et al. 2018, Algorithm 1) adds
``z ~ N(0, (σ·C)² I)`` to the sum of C-clipped client updates, σ being the noise
multiplier. Two placements:

* **central**: the server adds ``N(0, (σC)²)`` once to the sum;
* **distributed** (with secure aggregation, Kairouz et al. 2021, "The
  Distributed Discrete Gaussian Mechanism for Federated Learning with Secure
  Aggregation", §1–3): each of the m participants adds ``N(0, (σC)²/m)`` to its
  own update. Independent Gaussians sum to a Gaussian with the variances added,
  so the m shares sum to exactly ``N(0, (σC)²)``: the server, seeing only the
  sum, sees the central mechanism.

Randomness is explicit: a ``numpy.random.Generator`` (reproducible), or
``secure=True`` which draws from the operating system's CSPRNG (``os.urandom``)
and ignores any seed.

Floating-point caveat (Mironov 2012, "On Significance of the Least Significant
Bits for Differential Privacy"): the privacy proof is for real-valued noise.
Float64 samples take only finitely many values and their spacing depends on the
magnitude, so ``value + noise`` can in principle reveal ``value`` through the
low-order bits; Box–Muller from 53-bit uniforms also truncates the tails at about
8.6σ. Neither this module nor the libraries the field uses (Opacus, TF Privacy)
removes that gap; the rigorous fix is a discrete Gaussian on a grid (Canonne,
Kamath & Steinke 2020), which secure aggregation with integer arithmetic would
need anyway. Treat the guarantee as that of the continuous mechanism.
"""

from __future__ import annotations

import math
import os

import numpy as np

from fedpeft.types import Float64Array, Params, ParamsLike

NoiseParams = dict[str, Float64Array]
"""Float64 noise arrays with a :data:`fedpeft.types.Params` layout."""

_TWO_POW_53 = float(2**53)


def _check_std(std: float) -> float:
    if isinstance(std, bool) or not isinstance(std, int | float):
        raise ValueError(f"std must be a finite number >= 0, got {std!r}")
    if not (math.isfinite(std) and std >= 0):
        raise ValueError(f"std must be a finite number >= 0, got {std!r}")
    return float(std)


def _uniform53(count: int) -> tuple[Float64Array, Float64Array]:
    """``count`` uniforms in (0, 1] and ``count`` in [0, 1) from ``os.urandom``.

    Each uses the top 53 bits of a 64-bit word from the OS CSPRNG, so every
    float64 on the 2⁻⁵³ grid is equally likely.
    """
    words = np.frombuffer(os.urandom(16 * count), dtype=np.uint64) >> np.uint64(11)
    k = words.astype(np.float64)  # exact: k < 2**53
    return (k[:count] + 1.0) / _TWO_POW_53, k[count:] / _TWO_POW_53


def secure_standard_normal(size: int) -> Float64Array:
    """``size`` i.i.d. N(0, 1) draws from OS entropy (Box–Muller, float64).

    Box & Muller 1958: for U₁ ∈ (0, 1], U₂ ∈ [0, 1) uniform and independent,
    ``√(−2 ln U₁)·cos(2πU₂)`` and ``√(−2 ln U₁)·sin(2πU₂)`` are independent
    standard normals. The uniforms come from ``os.urandom`` (the kernel CSPRNG),
    so nothing is reproducible and no seed can be recovered from the output.
    See the module docstring for the floating-point caveat.

    Raises:
        ValueError: if ``size`` is negative.
    """
    if size < 0:
        raise ValueError(f"size must be >= 0, got {size}")
    pairs = (size + 1) // 2
    u1, u2 = _uniform53(pairs)
    radius = np.sqrt(-2.0 * np.log(u1))
    angle = 2.0 * np.pi * u2
    both = np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])
    out: Float64Array = both[:size]
    return out


def standard_normal(
    size: int, rng: np.random.Generator | None, secure: bool = False
) -> Float64Array:
    """``size`` N(0, 1) draws from ``rng`` (seeded) or OS entropy (``secure``).

    Raises:
        ValueError: if neither or both sources are given: seeded mode needs
            ``rng``; secure mode takes ``rng=None`` (a seed there would suggest a
            reproducibility that OS entropy does not have).
        TypeError: if ``rng`` is not a ``numpy.random.Generator``.
    """
    if secure:
        if rng is not None:
            raise ValueError(
                "secure=True draws from OS entropy and ignores seeds; pass rng=None"
            )
        return secure_standard_normal(size)
    if rng is None:
        raise ValueError(
            "noise needs an explicit numpy.random.Generator (rng=...) or "
            "secure=True; the global RNG is never used"
        )
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng)}")
    draws: Float64Array = rng.standard_normal(size, dtype=np.float64)
    return draws


def gaussian_noise_like(
    like: ParamsLike,
    std: float,
    rng: np.random.Generator | None,
    secure: bool = False,
) -> NoiseParams:
    """i.i.d. ``N(0, std²)`` noise with ``like``'s keys and shapes, in float64.

    For the central mechanism pass ``std = σ·C`` (see :func:`central_noise_std`);
    for one client's share in distributed mode ``std = σ·C/√m``
    (:func:`distributed_noise_std`). Draws are taken as one flat vector in the
    sorted-key order of :func:`fedpeft.aggregation.flatten`, so the result does
    not depend on the mapping's insertion order. ``std == 0`` returns zeros and
    consumes nothing from ``rng``.

    Args:
        like: Layout to match (values are not read beyond their shapes).
        std: Standard deviation per coordinate, ≥ 0.
        rng: Seeded generator, or ``None`` with ``secure=True``.
        secure: Draw from OS entropy (:func:`secure_standard_normal`).

    Raises:
        ValueError: if ``std`` is negative or not finite, or the source of
            randomness is missing/ambiguous (see :func:`standard_normal`).
    """
    sigma = _check_std(std)
    sizes = {name: int(np.prod(np.shape(like[name]))) for name in sorted(like)}
    total = sum(sizes.values())
    if sigma == 0.0:
        return {n: np.zeros(np.shape(like[n]), np.float64) for n in sorted(like)}
    flat = sigma * standard_normal(total, rng, secure)  # (total,)
    out: NoiseParams = {}
    start = 0
    for name, size in sizes.items():
        out[name] = flat[start : start + size].reshape(np.shape(like[name]))
        start += size
    return out


def central_noise_std(noise_multiplier: float, clip_norm: float) -> float:
    """Std ``σ·C`` of the server's noise on the sum (McMahan et al. 2018, Alg. 1).

    Raises:
        ValueError: if σ < 0 or C ≤ 0 (or either is not finite).
    """
    _check_multiplier(noise_multiplier)
    if not (math.isfinite(clip_norm) and clip_norm > 0):
        raise ValueError(f"clip_norm must be a finite number > 0, got {clip_norm!r}")
    return float(noise_multiplier) * float(clip_norm)


def distributed_noise_std(
    noise_multiplier: float, clip_norm: float, num_clients: int
) -> float:
    """Per-client std ``σ·C/√m`` so that m clients' shares sum to ``N(0, (σC)²)``.

    Var(Σᵢ zᵢ) = m · (σC)²/m = (σC)². If only m' < m shares reach the sum (a
    client dropped after being told m), the total std is ``σC·√(m'/m)``: account
    with :func:`effective_noise_multiplier`, or over-provision m.

    Raises:
        ValueError: for σ < 0, C ≤ 0 or ``num_clients < 1``.
    """
    if isinstance(num_clients, bool) or num_clients < 1:
        raise ValueError(f"num_clients must be an integer >= 1, got {num_clients!r}")
    return central_noise_std(noise_multiplier, clip_norm) / math.sqrt(num_clients)


def effective_noise_multiplier(
    noise_multiplier: float, planned_clients: int, contributing_clients: int
) -> float:
    """The σ actually achieved when ``contributing_clients`` of the planned m
    shares of ``N(0, (σC)²/m)`` reach the sum: ``σ·√(m'/m)``.

    Raises:
        ValueError: unless ``1 <= contributing_clients <= planned_clients`` and
            σ ≥ 0.
    """
    _check_multiplier(noise_multiplier)
    if not 1 <= contributing_clients <= planned_clients:
        raise ValueError(
            f"contributing_clients={contributing_clients} must be in "
            f"[1, planned_clients={planned_clients}]"
        )
    return float(noise_multiplier) * math.sqrt(contributing_clients / planned_clients)


def _check_multiplier(noise_multiplier: float) -> None:
    if not (math.isfinite(noise_multiplier) and noise_multiplier >= 0):
        raise ValueError(
            f"noise_multiplier must be a finite number >= 0, got {noise_multiplier!r}"
        )


def add_noise(params: ParamsLike, noise: NoiseParams) -> Params:
    """``params + noise`` per tensor, summed in float64 and cast to float32.

    Raises:
        ValueError: if the keys differ.
    """
    if sorted(params) != sorted(noise):
        raise ValueError(
            f"noise keys {sorted(noise)} do not match params keys {sorted(params)}"
        )
    return {
        name: (np.asarray(value, np.float64) + noise[name]).astype(np.float32)
        for name, value in params.items()
    }
