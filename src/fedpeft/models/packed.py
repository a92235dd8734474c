"""Frozen bf16 linear layers with their weights packed once for oneDNN.

On the CPU a bf16 ``nn.Linear`` runs a oneDNN matmul that first reorders the
weight into the blocked layout its AMX/AVX-512 kernels read, on every call.
The frozen body's weights never change, so :class:`PackedLinear` reorders
each weight once (``torch.ops.mkldnn._reorder_linear_weight``) and calls the
matmul on the packed copy (``torch.ops.mkldnn._linear_pointwise``, the pair
torch.compile's CPU weight-packing pass emits). Outputs and input gradients
are the same, bit for bit, as ``nn.Linear``'s (tests); the main job's widest
layer (384 → 1,536 channels, 16 × 64 tokens) took 0.84 → 0.54 ms forward and
1.59 → 1.17 ms with the input gradient (``bench/packed_linear.py``).

A backward pass through a frozen layer needs only the gradient of its input,
``grad_out @ W``, itself a linear layer with weight ``Wᵀ``; that transpose is
packed on the first backward and kept. No gradient reaches the weight.

The packed tensors are opaque oneDNN tensors: they are left out of
``state_dict``, pickles and deep copies (the weight stays an ordinary
parameter) and rebuilt where the module lands.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

_PACKED = ("_forward_weight", "_backward_weight")


@functools.cache
def packing_available() -> bool:
    """Whether this torch build has the oneDNN ops and runs them in bf16 (a
    one-off check on a tiny layer, equal to ``F.linear``)."""
    try:
        mkldnn = torch.ops.mkldnn
        if not torch.backends.mkldnn.is_available():  # type: ignore[no-untyped-call]
            return False
        gen = torch.Generator().manual_seed(0)
        w = torch.randn(8, 4, generator=gen).bfloat16()
        x = torch.randn(3, 4, generator=gen).bfloat16()
        y = mkldnn._linear_pointwise(
            x, mkldnn._reorder_linear_weight(w), None, "none", [], ""
        )
    except (AttributeError, RuntimeError, NotImplementedError):
        return False
    return bool(torch.equal(y, F.linear(x, w)))


def _packed_matmul(x: torch.Tensor, packed: torch.Tensor, bias: Any) -> torch.Tensor:
    """``x @ Wᵀ + bias`` for ``x`` ``(..., in)`` with ``W`` packed."""
    rows = x.reshape(-1, x.shape[-1])
    out: torch.Tensor = torch.ops.mkldnn._linear_pointwise(
        rows, packed, bias, "none", [], ""
    )
    return out.reshape(*x.shape[:-1], out.shape[-1])


class _FrozenPackedLinear(torch.autograd.Function):
    """The layer's output, with the input's gradient through the packed ``Wᵀ``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, layer: PackedLinear) -> torch.Tensor:
        ctx.layer = layer
        return _packed_matmul(x, layer.forward_weight(), layer.bias)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        layer: PackedLinear = ctx.layer
        return _packed_matmul(grad.contiguous(), layer.backward_weight(), None), None


class PackedLinear(nn.Module):
    """A frozen bf16 ``nn.Linear`` whose matmuls read a packed weight.

    Holds the original ``weight`` and ``bias`` parameters (same names, same
    ``state_dict``); they must not require a gradient.
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        if linear.weight.requires_grad or (
            linear.bias is not None and linear.bias.requires_grad
        ):
            raise ValueError("PackedLinear is for frozen layers; this one trains")
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.weight = linear.weight
        self.bias = linear.bias
        self._lock = threading.Lock()
        self._forward_weight: torch.Tensor | None = None
        self._backward_weight: torch.Tensor | None = None

    def forward_weight(self) -> torch.Tensor:
        if self._forward_weight is None:
            with self._lock:
                if self._forward_weight is None:
                    self._forward_weight = torch.ops.mkldnn._reorder_linear_weight(
                        self.weight.detach()
                    )
        return self._forward_weight

    def backward_weight(self) -> torch.Tensor:
        if self._backward_weight is None:
            with self._lock:
                if self._backward_weight is None:
                    self._backward_weight = torch.ops.mkldnn._reorder_linear_weight(
                        self.weight.detach().t().contiguous()
                    )
        return self._backward_weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            out: torch.Tensor = _FrozenPackedLinear.apply(x, self)  # type: ignore[no-untyped-call]
            return out
        return _packed_matmul(x, self.forward_weight(), self.bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, packed"
        )

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for name in _PACKED:
            state[name] = None
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)  # type: ignore[no-untyped-call]
        self._lock = threading.Lock()


def pack_linear_layers(module: nn.Module) -> int:
    """Replace every frozen bf16 CPU ``nn.Linear`` inside ``module`` by a
    :class:`PackedLinear` (in place); returns how many were replaced (0 where
    :func:`packing_available` says no)."""
    if not packing_available():
        return 0
    replaced = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if (
                type(child) is nn.Linear
                and child.weight.dtype == torch.bfloat16
                and child.weight.device.type == "cpu"
                and not child.weight.requires_grad
                and (child.bias is None or not child.bias.requires_grad)
            ):
                setattr(parent, name, PackedLinear(child))
                replaced += 1
    return replaced
