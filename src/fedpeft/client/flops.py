"""Exact FLOP counts of training and evaluation steps.

``torch.utils.flop_counter.FlopCounterMode`` counts the FLOPs of the operators a
step really runs. A step's count depends only on its shapes, and a transformer
step's FLOPs are linear in the number of sequences (every counted operator,
matmuls and attention, scales with the batch), so a step is keyed by its
sequence length and counted once *per sequence*: ``run(key, step, count=n)``
measures the first step of each key and scales the per-sequence count by ``n``
afterwards. Counting is slow (Python dispatch on every operator), so this keeps
it to the first step of each distinct length.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TypeVar

from torch.utils.flop_counter import FlopCounterMode

T = TypeVar("T")


class FlopMeter:
    """Accumulates FLOPs of steps, counting each distinct key once."""

    def __init__(self) -> None:
        self._per_unit: dict[Hashable, float] = {}
        self.total = 0.0

    def run(self, key: Hashable, step: Callable[[], T], count: int = 1) -> T:
        """Run ``step`` and add its FLOPs.

        Args:
            key: What the FLOPs per unit depend on (e.g. the sequence length).
            step: The work.
            count: Units in this step (e.g. sequences); the first step of a key
                is measured and divided by its count, later ones are scaled.
        """
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        cached = self._per_unit.get(key)
        if cached is not None:
            self.total += cached * count
            return step()
        counter = FlopCounterMode(display=False)
        with counter:
            result = step()
        flops = float(counter.get_total_flops())
        self._per_unit[key] = flops / count
        self.total += flops
        return result

    def known(self, key: Hashable) -> bool:
        """Whether ``key`` has been measured."""
        return key in self._per_unit

    def add(self, key: Hashable, count: int) -> None:
        """Count ``count`` units of an already measured ``key`` without running."""
        self.total += self._per_unit[key] * count

    def reset(self) -> None:
        self.total = 0.0
