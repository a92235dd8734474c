"""The local-training steps every training loop shares.

Sequential training (:mod:`fedpeft.client.local`), client-batched training
(:mod:`fedpeft.client.batched`) and DP-SGD (:mod:`fedpeft.client.dp_local`) take
their steps the same way: which examples each step uses (:func:`batch_orders`),
the optimizer that takes it (:func:`build_optimizer`) and what the steps add up
to (:class:`LocalTrainStats`). Keeping them here lets those modules import each
other in one direction only.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from fedpeft.config import ClientSection
from fedpeft.peft.base import AdapterClassifier
from fedpeft.types import Params


@dataclass(frozen=True)
class LocalTrainStats:
    """What one local training run did."""

    loss: float
    steps: int
    examples: int
    flops: int
    seconds: float
    control: Params | None = None
    """SCAFFOLD: the mean raw gradient per trainable tensor (the client's new
    control variate); ``None`` without SCAFFOLD."""


def batch_orders(
    n: int, batch_size: int, epochs: int, steps: int, rng: np.random.Generator
) -> Iterator[np.ndarray]:
    """Index batches: ``epochs`` shuffled passes, or exactly ``steps`` batches
    drawn from as many shuffled passes as needed."""
    target = steps if steps > 0 else None
    done = 0
    epoch = 0
    while (target is None and epoch < epochs) or (target is not None and done < target):
        perm = rng.permutation(n)
        for start in range(0, n, batch_size):
            if target is not None and done >= target:
                return
            yield perm[start : start + batch_size]
            done += 1
        epoch += 1


def build_optimizer(model: AdapterClassifier, cfg: ClientSection) -> torch.optim.AdamW:
    """AdamW with separate learning rates for the method's tensors and the head."""
    groups = [
        {"params": model.body_parameters(), "lr": cfg.lr},
        {"params": model.head_parameters(), "lr": cfg.head_lr},
    ]
    return torch.optim.AdamW(
        [g for g in groups if g["params"]], weight_decay=cfg.weight_decay
    )
