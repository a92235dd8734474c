"""Shared pieces of the client-batching tests."""

from __future__ import annotations

import numpy as np

from fedpeft.types import Params


def perturbed_starts(base: Params, count: int, seed: int = 3) -> list[Params]:
    """``count`` start states near ``base`` (one per client), so that clients
    start apart and a mixed-up client shows."""
    rng = np.random.default_rng(seed)
    return [
        {
            n: (v + 0.01 * rng.normal(size=v.shape)).astype(np.float32)
            for n, v in base.items()
        }
        for _ in range(count)
    ]
