"""Poisson subsampling with an explicit generator (clients or records).

Poisson sampling includes each of n items independently with probability q; it
is the sampling the Sampled Gaussian Mechanism analysis assumes (Abadi et al.
2016, §3.1; Mironov et al. 2019). The sample size is random (possibly 0), so
the consumer must divide by the EXPECTED size q·n, never by the drawn one.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt

IndexArray = npt.NDArray[np.int64]


def _check(n: int, q: float, rng: np.random.Generator) -> None:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    if not (math.isfinite(q) and 0 < q <= 1):
        raise ValueError(f"sample rate q must be in (0, 1], got {q!r}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng)}")


def poisson_subsample(n: int, q: float, rng: np.random.Generator) -> IndexArray:
    """Sorted indices of ``range(n)``, each kept independently with probability q.

    Raises:
        ValueError: if ``n < 1`` or q is outside (0, 1]; TypeError for a bad rng.
    """
    _check(n, q, rng)
    keep = rng.random(int(n)) < q  # (n,) bool
    return np.flatnonzero(keep).astype(np.int64)


def poisson_batches(
    n: int, q: float, steps: int, rng: np.random.Generator
) -> Iterator[IndexArray]:
    """``steps`` independent Poisson batches over ``range(n)`` (DP-SGD batches).

    Each batch has expected size q·n; some may be empty and must still produce a
    (noise-only) step for the accounting to hold.

    Raises:
        ValueError: for ``steps < 0`` or see :func:`poisson_subsample`.
    """
    _check(n, q, rng)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    return (poisson_subsample(n, q, rng) for _ in range(steps))
