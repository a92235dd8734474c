"""Named, independent random streams derived from the run seed.

Every draw in a run comes from ``stream(seed, kind, *keys)``: the same
(seed, kind, round, client) always gives the same generator, whatever ran before,
which is what makes a resumed run equal an uninterrupted one.
"""

from __future__ import annotations

import numpy as np
import torch

STREAMS = {
    "init": 0,
    "sample": 1,
    "client": 2,
    "partition": 3,
    "split": 4,
    "baseline": 5,
    "secagg": 6,
    "dp": 7,
    "search": 8,
    "distill": 9,
    "server": 10,
    "model-stage": 11,
    "attackers": 12,
    "attack": 13,
}


def stream(seed: int, kind: str, *keys: int) -> np.random.Generator:
    """A numpy generator for the stream ``kind`` at ``keys`` (e.g. round, client)."""
    return np.random.default_rng([seed, STREAMS[kind], *keys])


def torch_generator(rng: np.random.Generator) -> torch.Generator:
    """A torch CPU generator seeded from ``rng``."""
    return torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
