"""Backbone compute precision: fp32, or bf16 autocast with fp32 adapters."""

from __future__ import annotations

import contextlib

import torch


def autocast(
    precision: str, device: torch.device | str
) -> contextlib.AbstractContextManager[object]:
    """Context that runs the matmuls of ``device`` in bf16 when asked.

    Autocast is per device type: it must name the device the backbone computes
    on (autocast for CUDA leaves CPU operations in fp32, which once made
    ``"bf16"`` silently fp32 on machines with a GPU).

    Raises:
        ValueError: for a precision other than ``"fp32"`` / ``"bf16"``.
    """
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast(
            device_type=torch.device(device).type, dtype=torch.bfloat16
        )
    raise ValueError(f"precision={precision!r}: choose 'fp32' or 'bf16'")
