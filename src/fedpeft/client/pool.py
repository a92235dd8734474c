"""The adapters one process trains and evaluates: one per adapter shape, all on
the shared frozen backbone, built on first use."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import torch

from fedpeft.peft.base import AdapterClassifier
from fedpeft.types import Params

Shape = tuple[int, int] | None
"""``None``: the run's configured adapter; ``(rank, layers)``: a LoRA size."""


class AdapterPool:
    """Adapters by shape, built once each.

    Args:
        build: Builds the adapter of a shape (seeded: the same shape always
            starts from the same state).
        frozen: Per shape, values of parameters that stay frozen (FFA-LoRA's
            seeded A), written once when the adapter is built.
    """

    def __init__(
        self,
        build: Callable[[Shape], AdapterClassifier],
        frozen: Callable[[Shape], Params] | None = None,
    ) -> None:
        self._build = build
        self._frozen = frozen
        self._models: dict[Shape, AdapterClassifier] = {}

    def __call__(self, shape: Shape) -> AdapterClassifier:
        if shape not in self._models:
            model = self._build(shape)
            if self._frozen is not None:
                freeze(model, self._frozen(shape))
            self._models[shape] = model
        return self._models[shape]


def freeze(model: AdapterClassifier, values: Mapping[str, np.ndarray]) -> None:
    """Write ``values`` into ``model``'s parameters of those names and stop
    their gradients (they leave the trainable payload)."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in values.items():
            params[name].requires_grad_(False)
            params[name].copy_(torch.from_numpy(np.asarray(value)))
