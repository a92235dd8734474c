"""FlopMeter: one measurement per key, scaled by the number of sequences."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from fedpeft.client.flops import FlopMeter


def _step(layer: torch.nn.Module, n: int, seq: int) -> torch.Tensor:
    x = torch.randn(n, seq, 8, generator=torch.Generator().manual_seed(n))
    attn = torch.nn.functional.scaled_dot_product_attention(x, x, x)
    return layer(attn).sum()  # type: ignore[no-any-return]


def _exact(layer: torch.nn.Module, n: int, seq: int) -> float:
    counter = FlopCounterMode(display=False)
    with counter:
        _step(layer, n, seq)
    return float(counter.get_total_flops())


def test_later_steps_are_scaled_from_the_first_and_match_a_real_count() -> None:
    layer = torch.nn.Linear(8, 3)
    meter = FlopMeter()
    meter.run(("s", 5), lambda: _step(layer, 4, 5), count=4)
    first = meter.total
    assert first == _exact(layer, 4, 5) > 0
    meter.run(("s", 5), lambda: _step(layer, 7, 5), count=7)
    assert meter.total - first == pytest.approx(_exact(layer, 7, 5))
    meter.run(("s", 9), lambda: _step(layer, 2, 9), count=2)  # new key: measured
    assert meter.total == pytest.approx(
        _exact(layer, 4, 5) + _exact(layer, 7, 5) + _exact(layer, 2, 9)
    )
    with pytest.raises(ValueError, match="count must be"):
        meter.run(("s", 5), lambda: None, count=0)
