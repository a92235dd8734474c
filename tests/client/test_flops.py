"""FlopMeter: one measurement per key, scaled by the number of sequences, and
per-length families predicted once their parabola is checked."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from fedpeft.client.flops import FlopMeter, counting_mode
from fedpeft.experiment import Experiment
from fedpeft.models.tokenized import Batch


def _step(layer: torch.nn.Module, n: int, seq: int) -> torch.Tensor:
    x = torch.randn(n, seq, 8, generator=torch.Generator().manual_seed(n))
    attn = torch.nn.functional.scaled_dot_product_attention(x, x, x)
    return layer(attn).sum()  # type: ignore[no-any-return]


def _exact(layer: torch.nn.Module, n: int, seq: int) -> float:
    counter = counting_mode()
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


def test_a_checked_family_predicts_other_lengths_exactly() -> None:
    """Attention is quadratic in the length and the projection linear: after
    five measured lengths, every other length is computed, and equals a real
    count exactly (including lengths outside the measured range)."""
    layer = torch.nn.Linear(8, 3)
    meter = FlopMeter()
    for seq in (5, 9, 12, 17):
        meter.run(("s", seq), lambda seq=seq: _step(layer, 3, seq), count=3)
        assert not meter.known(("s", 40))
    meter.run(("s", 20), lambda: _step(layer, 3, 20), count=3)
    for seq in (1, 7, 40, 64):
        assert meter.known(("s", seq))
        before = meter.total
        meter.add(("s", seq), 6)
        assert meter.total - before == _exact(layer, 6, seq)
    assert not meter.known(("other", 7)) and not meter.known("s")

    measuring = FlopMeter(fit_lengths=False)
    for seq in (5, 9, 12, 17, 20):
        measuring.run(("s", seq), lambda seq=seq: _step(layer, 3, seq), count=3)
    assert not measuring.known(("s", 40)) and measuring.known(("s", 20))


def test_a_family_off_the_parabola_keeps_being_measured() -> None:
    def cubic(seq: int) -> torch.Tensor:
        x = torch.ones(seq, seq)
        return x @ x  # 2·seq³ FLOPs

    meter = FlopMeter()
    for seq in (2, 3, 4, 5, 6):
        meter.run(("c", seq), lambda seq=seq: cubic(seq))
    assert not meter.known(("c", 7))
    meter.run(("c", 7), lambda: cubic(7))
    assert meter.total == sum(2 * s**3 for s in (2, 3, 4, 5, 6, 7))
    with pytest.raises(KeyError, match="have not been measured"):
        meter.add(("c", 8), 1)


def test_real_transformer_steps_follow_the_parabola(
    tiny_experiment: Experiment,
) -> None:
    """The assumption on the real backbone and a method with quadratic terms
    in its prompt: forward + backward of a soft-prompt step, predicted from
    five lengths, equals the counted FLOPs at other lengths."""
    model = tiny_experiment.new_adapter("prompt")
    data = tiny_experiment.train
    long = np.flatnonzero(data.lengths >= 30)[:4]

    def step(width: int) -> None:
        batch = data.batch(long)
        batch = Batch(
            batch.input_ids[:, :width],
            batch.attention_mask[:, :width],
            batch.labels,
        )
        F.cross_entropy(model(batch), batch.labels).backward()  # type: ignore[no-untyped-call]

    meter = FlopMeter()
    for width in (6, 10, 14, 22, 26):
        meter.run(("train", width), lambda width=width: step(width), count=4)
    for width in (3, 18, 30):
        counter = counting_mode()
        with counter:
            step(width)
        before = meter.total
        meter.add(("train", width), 4)
        assert meter.total - before == counter.get_total_flops()


@pytest.mark.parametrize("groups", [1, 4, 16])
def test_a_convolutions_weight_gradient_costs_its_forward(groups: int) -> None:
    """Input and weight gradients of a convolution cost one forward each;
    torch's own count makes a grouped one's weight gradient ``groups`` times
    too large, and for ``groups = 1`` the two counts agree."""
    conv = torch.nn.Conv2d(16, 16, 3, padding=1, groups=groups, bias=False)
    x = torch.randn(2, 16, 8, 8, requires_grad=True)
    forward = counting_mode()
    with forward:
        out = conv(x)
    both = counting_mode()
    with both:
        out.sum().backward()
    assert both.get_total_flops() == 2 * forward.get_total_flops() > 0
    torch_own = FlopCounterMode(display=False)
    with torch_own:
        conv(x).sum().backward()
    expected = 3 * forward.get_total_flops() + (groups - 1) * forward.get_total_flops()
    assert torch_own.get_total_flops() == expected


def test_packed_linear_layers_count_as_the_linear_they_replace() -> None:
    from fedpeft.models.packed import PackedLinear, packing_available

    if not packing_available():
        pytest.skip("this torch build has no oneDNN bf16 linear")
    layer = torch.nn.Linear(24, 40).to(torch.bfloat16).requires_grad_(False)
    x = torch.randn(3, 5, 24).to(torch.bfloat16).requires_grad_(True)
    counts = []
    for module in (layer, PackedLinear(layer)):
        counter = counting_mode()
        with counter:
            module(x).float().sum().backward()
        counts.append(counter.get_total_flops())
    # forward and the input's gradient: 2 · 15 rows · 24 · 40 each
    assert counts[0] == counts[1] == 2 * (2 * 15 * 24 * 40)


def test_cpu_flash_attention_counts_its_matmuls() -> None:
    """torch leaves the CPU flash kernel uncounted; the meter counts what the
    same attention costs as explicit matmuls (2 forward, 5 backward)."""
    q, k, v = (torch.randn(2, 4, 7, 8, requires_grad=True) for _ in range(3))
    counter = counting_mode()
    with counter:
        F.scaled_dot_product_attention(q, k, v).sum().backward()
    one_matmul = 2 * (2 * 4) * 7 * 7 * 8
    assert counter.get_total_flops() == (2 + 5) * one_matmul
