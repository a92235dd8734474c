"""bf16 autocast applies to the device the backbone computes on."""

from __future__ import annotations

import pytest
import torch

from fedpeft.models.precision import autocast


def test_bf16_casts_cpu_matmuls_even_when_cuda_is_available(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    x = torch.ones(2, 3)
    with autocast("bf16", "cpu"):
        assert (x @ x.T).dtype == torch.bfloat16
    with autocast("fp32", "cpu"):
        assert (x @ x.T).dtype == torch.float32


def test_unknown_precision_is_refused() -> None:
    with pytest.raises(ValueError, match="choose 'fp32' or 'bf16'"):
        autocast("fp16", "cpu")
