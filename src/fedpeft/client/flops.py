"""Exact FLOP counts of training and evaluation steps.

``torch.utils.flop_counter.FlopCounterMode`` counts the FLOPs of the operators a
step really runs. A step's count depends only on the batch shape, so each new
``(batch, seq)`` shape is counted once, on a real step, and reused.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TypeVar

from torch.utils.flop_counter import FlopCounterMode

T = TypeVar("T")


class FlopMeter:
    """Accumulates FLOPs of steps, counting each distinct step shape once."""

    def __init__(self) -> None:
        self._per_shape: dict[Hashable, int] = {}
        self.total = 0

    def run(self, key: Hashable, step: Callable[[], T]) -> T:
        """Run ``step`` and add its FLOPs (measured the first time ``key`` is seen)."""
        cached = self._per_shape.get(key)
        if cached is not None:
            self.total += cached
            return step()
        counter = FlopCounterMode(display=False)
        with counter:
            result = step()
        flops = int(counter.get_total_flops())
        self._per_shape[key] = flops
        self.total += flops
        return result

    def reset(self) -> None:
        self.total = 0
