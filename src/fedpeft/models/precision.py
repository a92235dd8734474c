"""Backbone compute precision: fp32, or bf16 autocast with fp32 adapters."""

from __future__ import annotations

import contextlib

import torch


def autocast(precision: str) -> contextlib.AbstractContextManager[object]:
    """Context that runs matmuls in bf16 (CPU or CUDA autocast) when asked.

    Raises:
        ValueError: for a precision other than ``"fp32"`` / ``"bf16"``.
    """
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        device = "cuda" if torch.cuda.is_available() else "cpu"
        return torch.autocast(device_type=device, dtype=torch.bfloat16)
    raise ValueError(f"precision={precision!r}: choose 'fp32' or 'bf16'")
