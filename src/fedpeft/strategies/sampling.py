"""Client sampling per round: a uniform draw without replacement.

The draw takes an explicit generator (derived by the caller from the run seed and
the round), never the global RNG, so a run is reproducible bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def sample_size(num_clients: int, fraction: float, min_clients: int) -> int:
    """``min(N, max(min_clients, round(fraction · N)))``, rounding half up.

    Raises:
        ValueError: if ``num_clients < 1``, ``fraction`` is outside [0, 1] or
            ``min_clients < 1``.
    """
    if not _is_int(num_clients) or num_clients < 1:
        raise ValueError(f"num_clients must be an integer >= 1, got {num_clients!r}")
    if not (math.isfinite(fraction) and 0 <= fraction <= 1):
        raise ValueError(f"fraction must be in [0, 1], got {fraction!r}")
    if not _is_int(min_clients) or min_clients < 1:
        raise ValueError(f"min_clients must be an integer >= 1, got {min_clients!r}")
    by_fraction = math.floor(fraction * num_clients + 0.5)
    return int(min(num_clients, max(min_clients, by_fraction)))


def sample_clients(
    num_clients: int, fraction: float, min_clients: int, rng: np.random.Generator
) -> npt.NDArray[np.int64]:
    """Draw this round's participants uniformly without replacement.

    Args:
        num_clients: N, the size of the federation (ids 0..N−1).
        fraction: Share of clients per round in [0, 1].
        min_clients: Lower bound ≥ 1 on the count (capped at N).
        rng: Generator for this round (e.g. seeded from (run seed, round)).

    Returns:
        Sorted distinct client ids, ``sample_size(...)`` of them.

    Raises:
        ValueError: see :func:`sample_size`; TypeError if ``rng`` is not a
            ``numpy.random.Generator``.
    """
    count = sample_size(num_clients, fraction, min_clients)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng)}")
    chosen = rng.choice(num_clients, size=count, replace=False)
    return np.sort(chosen).astype(np.int64)


def select_clients(
    eligible: Sequence[int],
    num_clients: int,
    fraction: float,
    min_clients: int,
    rng: np.random.Generator,
    poisson: bool = False,
) -> list[int]:
    """One round's participants among the ``eligible`` client ids.

    Fixed-size sampling draws ``min(sample_size(N, ...), len(eligible))``
    eligible clients without replacement (with every client eligible this is
    :func:`sample_clients`); Poisson sampling takes each eligible client with
    probability ``fraction`` (the draw the client-level DP accounting assumes).

    Returns:
        Sorted client ids.
    """
    pool = np.asarray(eligible, dtype=np.int64)
    if poisson:
        # Imported here: the fedpeft.privacy package loads dp-accounting and
        # scipy (about 1 s), and fedpeft.config imports this package.
        from fedpeft.privacy.sampling import poisson_subsample

        return [int(k) for k in pool[poisson_subsample(len(pool), fraction, rng)]]
    count = min(sample_size(num_clients, fraction, min_clients), len(pool))
    chosen = np.sort(rng.choice(len(pool), size=count, replace=False))
    return [int(k) for k in pool[chosen]]
