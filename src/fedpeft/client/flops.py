"""Exact FLOP counts of training and evaluation steps.

``torch.utils.flop_counter.FlopCounterMode`` counts the FLOPs of the operators a
step really runs. A step's count depends only on its shapes, and a transformer
step's FLOPs are linear in the number of sequences (every counted operator,
matmuls and attention, scales with the batch), so a step is keyed by its
sequence length and counted once *per sequence*: ``run(key, step, count=n)``
measures the first step of each key and scales the per-sequence count by ``n``
afterwards.

Counting is slow (Python dispatch on every operator), and client-batched
training meets a new padded length in almost every length bucket. A key
``(family, length)`` therefore also learns its family: a transformer's
per-sequence FLOPs are a polynomial of degree at most 2 in the sequence length
(projections and MLPs are linear in it, attention scores quadratic), so once
three lengths of a family are measured, two more measurements check the
parabola through them *exactly* (rational arithmetic on integer counts), and
from then on the family's other lengths are computed, not measured. A family
the check refutes keeps being measured length by length.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from fractions import Fraction
from math import prod
from typing import Any, TypeVar

import torch
from torch.utils.flop_counter import (
    FlopCounterMode,
    conv_backward_flop,
    sdpa_backward_flop_count,
    sdpa_flop_count,
)

T = TypeVar("T")

FIT_POINTS = 3  # a parabola
CHECKS = 2  # further lengths it must predict exactly before it is trusted


def grouped_conv_backward_flop(
    grad_out_shape: Any, x_shape: Any, w_shape: Any, *args: Any, **kwargs: Any
) -> int:
    """FLOPs of a convolution's backward, grouped convolutions counted right.

    torch's formula (2.13) counts the weight gradient of a grouped
    convolution as if every input channel met every output channel, ``groups``
    times too many: a depthwise convolution's weight gradient came out up to
    1,152× its forward on EfficientNet-Lite0. The weight gradient is a
    convolution of the same size as the forward, so it is counted as the
    forward is (``2 · out_elements · c_in/groups · kernel``)."""
    (_bias, _stride, _padding, _dilation, transposed, _out_pad, _groups, mask) = args
    out_shape = kwargs["out_shape"]
    no_weight = [mask[0], False, mask[2]]
    flops = int(
        conv_backward_flop(  # type: ignore[call-arg]  # torch's wrapper takes out_val
            grad_out_shape, x_shape, w_shape, *args[:7], no_weight, out_val=out_shape
        )
    )
    if mask[1]:
        c_out, c_in_per_group, *kernel = w_shape
        spatial = (x_shape if transposed else grad_out_shape)[2:]
        flops += 2 * x_shape[0] * c_out * c_in_per_group * prod([*spatial, *kernel])
    return flops


def packed_linear_flop(
    x_shape: Any, w_shape: Any, *args: Any, out_shape: Any = None, **kwargs: Any
) -> int:
    """FLOPs of oneDNN's linear on a packed weight
    (:class:`~fedpeft.models.packed.PackedLinear`): ``2 · rows · in · out``, as
    torch counts the ``addmm`` it replaces (bias not counted)."""
    return int(2 * prod(out_shape) * x_shape[-1])


def cpu_flash_attention_flop(
    q_shape: Any, k_shape: Any, v_shape: Any, *args: Any, **kwargs: Any
) -> int:
    """The CPU flash-attention forward, counted as torch counts the GPU
    kernels (its two matmuls); torch 2.13 leaves the CPU kernel uncounted."""
    return int(sdpa_flop_count(q_shape, k_shape, v_shape))  # type: ignore[no-untyped-call]


def cpu_flash_attention_backward_flop(
    grad_shape: Any,
    q_shape: Any,
    k_shape: Any,
    v_shape: Any,
    *args: Any,
    **kwargs: Any,
) -> int:
    """The CPU flash-attention backward, counted as torch counts the GPU ones."""
    flops = sdpa_backward_flop_count(grad_shape, q_shape, k_shape, v_shape)  # type: ignore[no-untyped-call]
    return int(flops)


def counting_mode() -> FlopCounterMode:
    """torch's FLOP counter with :func:`grouped_conv_backward_flop`, and counts
    for the CPU kernels it does not know: packed linear layers and flash
    attention."""
    aten = torch.ops.aten
    return FlopCounterMode(
        display=False,
        custom_mapping={
            aten.convolution_backward: grouped_conv_backward_flop,
            torch.ops.mkldnn._linear_pointwise: packed_linear_flop,
            aten._scaled_dot_product_flash_attention_for_cpu: cpu_flash_attention_flop,
            aten._scaled_dot_product_flash_attention_for_cpu_backward: (
                cpu_flash_attention_backward_flop
            ),
        },
    )


class FlopMeter:
    """Accumulates FLOPs of steps, counting each distinct key once (and each
    ``(family, length)`` family's lengths only until its parabola is checked).

    Args:
        fit_lengths: Compute the lengths of a checked family instead of
            measuring them (False: measure every length).
    """

    def __init__(self, fit_lengths: bool = True) -> None:
        self.fit_lengths = fit_lengths
        self._per_unit: dict[Hashable, Fraction] = {}
        self._lengths: dict[Hashable, dict[int, Fraction]] = {}
        self._fitted: dict[Hashable, list[tuple[int, Fraction]]] = {}
        self._refuted: set[Hashable] = set()
        self.total = 0.0

    def run(self, key: Hashable, step: Callable[[], T], count: int = 1) -> T:
        """Run ``step`` and add its FLOPs.

        Args:
            key: What the FLOPs per unit depend on; ``(family, length)`` for a
                step over sequences of one padded ``length``.
            step: The work.
            count: Units in this step (e.g. sequences); the first step of a key
                is measured and divided by its count, later ones are scaled.
        """
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        per_unit = self._known_per_unit(key)
        if per_unit is not None:
            self.total += float(per_unit * count)
            return step()
        counter = counting_mode()
        with counter:
            result = step()
        flops = int(counter.get_total_flops())
        self._learn(key, Fraction(flops, count))
        self.total += flops
        return result

    def known(self, key: Hashable) -> bool:
        """Whether ``key``'s FLOPs are known without measuring it."""
        return self._known_per_unit(key) is not None

    def add(self, key: Hashable, count: int) -> None:
        """Count ``count`` units of a known ``key`` without running.

        Raises:
            KeyError: if ``key`` is not known (see :meth:`known`).
        """
        per_unit = self._known_per_unit(key)
        if per_unit is None:
            raise KeyError(f"FLOPs of {key!r} have not been measured")
        self.total += float(per_unit * count)

    def reset(self) -> None:
        self.total = 0.0

    def _known_per_unit(self, key: Hashable) -> Fraction | None:
        if key in self._per_unit:
            return self._per_unit[key]
        family, length = _family(key)
        points = self._fitted.get(family)
        if points is None or length is None:
            return None
        return _through(points, length)

    def _learn(self, key: Hashable, per_unit: Fraction) -> None:
        self._per_unit[key] = per_unit
        family, length = _family(key)
        if not self.fit_lengths or length is None:
            return
        if family in self._refuted or family in self._fitted:
            return
        lengths = self._lengths.setdefault(family, {})
        lengths[length] = per_unit
        if len(lengths) < FIT_POINTS + CHECKS:
            return
        points = sorted(lengths.items())[:FIT_POINTS]
        if all(_through(points, n) == f for n, f in lengths.items()):
            self._fitted[family] = points
        else:
            self._refuted.add(family)


def _family(key: Hashable) -> tuple[Hashable, int | None]:
    """``(family, length)`` of a ``(family, length)`` key, else ``(key, None)``."""
    if (
        isinstance(key, tuple)
        and len(key) == 2
        and isinstance(key[1], int)
        and not isinstance(key[1], bool)
    ):
        return key[0], key[1]
    return key, None


def _through(points: list[tuple[int, Fraction]], x: int) -> Fraction:
    """The polynomial through ``points`` (Lagrange form), exactly, at ``x``."""
    total = Fraction(0)
    for i, (xi, yi) in enumerate(points):
        term = yi
        for j, (xj, _) in enumerate(points):
            if i != j:
                term *= Fraction(x - xj, xi - xj)
        total += term
    return total
